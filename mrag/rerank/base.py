"""The reranker interface, the query it takes, its settings, and the slot rule for mixed pools.

A reranker reorders a candidate pool retrieved deeper than ``k`` (``RerankSettings.depth``); the
caller cuts the result to ``k``. Every implementation follows one rule for hits it cannot score
(an image for a text cross-encoder, a hit whose vector is missing): **they keep their rank
positions** ("slots"), and the scored hits are reordered among the slots the scored hits held.
So an image ranked 2nd by the first stage is still 2nd after a text reranker ran, and two
rerankers for disjoint modalities compose (:class:`RoutedReranker`) without ever comparing
their scores with each other: a cross-encoder logit and a CLIP cosine have no common scale, and
neither do CLIP text-text and text-image cosines (the modality gap puts text-text far higher).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mrag.errors import ConfigError
from mrag.hits import VISUAL_MODALITIES

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import numpy as np

    from mrag.hits import Hit

#: Chunk modalities whose ``text`` is the content itself (scored by text rerankers).
TEXT_MODALITIES: tuple[str, ...] = ("text", "audio_segment", "video_segment")
#: What ``rerank.visual`` may name.
VISUAL_RERANKERS: tuple[str, ...] = ("none", "clip", "openai")


@dataclass(frozen=True, eq=False)  # eq=False: numpy fields have no single truth value
class RerankQuery:
    """What a reranker may use of the query; give what the query path already has.

    Attributes:
        text: the text query (cross-encoders and MaxSim need it; CLIP embeds it with the text
            tower when no ``clip_vector`` is given).
        image: the query image file's bytes (decoded with the CLIP spec's preprocessing when
            no ``pixels`` or ``clip_vector`` are given).
        pixels: (1, S, S, 3) or (S, S, 3) uint8 RGB at the CLIP spec's ``image_size``.
        clip_vector: the query's vector in the ``clip`` space (unit length), as the first stage
            searched with it: reusing it saves a forward pass.
        text_vector: the query's ``text_vec`` vector (unused by the current rerankers; kept so
            a bi-encoder rescoring can be added without changing callers).
    """

    text: str | None = None
    image: bytes | None = None
    pixels: np.ndarray | None = None
    clip_vector: np.ndarray | None = None
    text_vector: np.ndarray | None = None

    @property
    def has_text(self) -> bool:
        return bool(self.text and self.text.strip())

    @classmethod
    def from_request(
        cls, request: Any, vectors: Mapping[str, np.ndarray] | None = None
    ) -> RerankQuery:
        """From a validated search request (``.query`` text, ``.image`` bytes) and the query
        vectors the query path computed for it (``{"clip": ..., "text_vec": ...}``, as
        ``QueryEngine.encode`` returns them; missing spaces are fine)."""
        vectors = vectors or {}
        return cls(
            text=getattr(request, "query", None),
            image=getattr(request, "image", None),
            clip_vector=vectors.get("clip"),
            text_vector=vectors.get("text_vec"),
        )


@runtime_checkable
class Reranker(Protocol):
    """Reorders one candidate pool for one query, best first; never drops or adds hits.

    Scored hits get the reranker's score in ``Hit.score`` (higher is better, comparable only
    within one reranker's output); hits it could not score keep their slot and their first-stage
    score. The returned list is the order to use: scores of a mixed pool are not monotonic.
    """

    name: str

    def rerank(self, query: RerankQuery, hits: Sequence[Hit]) -> list[Hit]: ...


@dataclass(frozen=True)
class RerankSettings:
    """The ``rerank`` config section, as a plain dataclass (``mrag.config`` may wrap it).

    Attributes:
        text: reranker for text-bearing hits: ``none``, ``maxsim`` (late interaction over the
            packaged MiniLM), ``openai`` (an LLM behind an OpenAI-compatible endpoint), or a
            registered model spec name (``hf_cross_encoder`` family:
            ``cross-encoder/ms-marco-MiniLM-L-6-v2``, ``BAAI/bge-reranker-v2-m3``; an
            ``hf_text`` encoder for MaxSim over its tokens; an ``hf_causal_lm`` for an LLM
            judging each pair).
        visual: reranker for visual hits: ``none``, ``clip`` (exact cosine on the stored
            ``clip`` vectors against the query's CLIP vector), ``openai`` (a vision-language
            model behind an OpenAI-compatible endpoint) or a vision-language model spec
            (``hf_causal_lm`` with ``accepts_images``, e.g. ``tiny-vlm-random``) run locally.
        depth: candidates retrieved and reranked per query (then cut to ``k``).
        batch_size: query-passage pairs per forward pass.
        max_length: token cap per (query, passage) pair or passage.
        weights: local path or object-storage URI overriding the text model's weights.
        device: ``cpu`` or ``cuda``.
    """

    text: str = "none"
    visual: str = "none"
    depth: int = 50
    batch_size: int = 32
    max_length: int = 512
    weights: str = ""
    device: str = "cpu"

    def __post_init__(self) -> None:
        for field_name in ("depth", "batch_size", "max_length"):
            value = getattr(self, field_name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"rerank.{field_name} must be an integer >= 1, got {value!r}")
        if self.text == "clip":
            raise ConfigError(
                "rerank.text cannot be clip (it scores visual hits); use rerank.visual"
            )
        if self.visual not in VISUAL_RERANKERS and not _is_vision_lm(self.visual):
            raise ConfigError(
                f"rerank.visual must be one of {', '.join(VISUAL_RERANKERS)} or a registered "
                f"vision-language model (hf_causal_lm, accepts_images), got {self.visual!r}"
            )
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"rerank.device must be one of cpu, cuda, got {self.device!r}")

    @property
    def enabled(self) -> bool:
        return self.text != "none" or self.visual != "none"

    def pool_size(self, k: int) -> int:
        """How many candidates to retrieve for a top-``k`` answer (``k`` when nothing reranks)."""
        return max(k, self.depth) if self.enabled else k


def _is_vision_lm(name: str) -> bool:
    from mrag.models import get_model_spec

    try:
        spec = get_model_spec(name)
    except ConfigError:
        return False
    return spec.family == "hf_causal_lm" and spec.accepts_images


def reorder_in_slots(hits: Sequence[Hit], scores: dict[int, float]) -> list[Hit]:
    """Reorders the scored hits among their own positions; unscored hits keep theirs.

    Args:
        hits: the pool, best first.
        scores: position in ``hits`` → new score, for the hits that were scored. Ties keep the
            first-stage order (a stable sort), so a reranker that cannot tell two hits apart
            does no harm.
    """
    slots = sorted(scores)
    ranked = sorted(slots, key=lambda i: -scores[i])  # stable: ties keep first-stage order
    out = list(hits)
    for slot, source in zip(slots, ranked, strict=True):
        out[slot] = replace(hits[source], score=round(float(scores[source]), 6))
    return out


class IdentityReranker:
    """``none``: returns the pool as it came (what the query path uses when reranking is off)."""

    name = "none"

    def rerank(self, query: RerankQuery, hits: Sequence[Hit]) -> list[Hit]:
        return list(hits)


class RoutedReranker:
    """Text-bearing hits to one reranker, visual hits to another, each within its own slots.

    Each part sees only its hits (in first-stage order) and puts them back into the positions
    they held, so the two never compare scores; a hit neither part takes keeps its slot.

    Args:
        text: reranker for hits whose modality is in ``text_modalities``.
        visual: reranker for hits whose modality is in ``visual_modalities``.
    """

    def __init__(
        self,
        text: Reranker | None = None,
        visual: Reranker | None = None,
        *,
        text_modalities: Sequence[str] = TEXT_MODALITIES,
        visual_modalities: Sequence[str] = VISUAL_MODALITIES,
    ) -> None:
        overlap = set(text_modalities) & set(visual_modalities)
        if overlap:
            raise ConfigError(f"a modality cannot go to both rerankers: {sorted(overlap)}")
        self.parts = [
            (part, tuple(modalities))
            for part, modalities in ((text, text_modalities), (visual, visual_modalities))
            if part is not None and not isinstance(part, IdentityReranker)
        ]
        self.name = "+".join(part.name for part, _ in self.parts) or "none"

    def rerank(self, query: RerankQuery, hits: Sequence[Hit]) -> list[Hit]:
        return self.rerank_many([query], [hits])[0]

    def rerank_many(
        self, queries: Sequence[RerankQuery], pools: Sequence[Sequence[Hit]]
    ) -> list[list[Hit]]:
        """Each part reorders its slots of every pool, all pools in one call of the part."""
        outs = [list(pool) for pool in pools]
        for part, modalities in self.parts:
            slots = [[i for i, hit in enumerate(out) if hit.modality in modalities] for out in outs]
            wanted = [n for n, pool_slots in enumerate(slots) if pool_slots]
            if not wanted:
                continue
            reranked = rerank_many(
                part, [queries[n] for n in wanted], [[outs[n][i] for i in slots[n]] for n in wanted]
            )
            for n, pool in zip(wanted, reranked, strict=True):
                if len(pool) != len(slots[n]):  # a bug in a part, not bad input
                    raise RuntimeError(
                        f"reranker {part.name} returned {len(pool)} of {len(slots[n])}"
                    )
                for slot, hit in zip(slots[n], pool, strict=True):
                    outs[n][slot] = hit
        return outs


def rerank_many(
    reranker: Reranker, queries: Sequence[RerankQuery], pools: Sequence[Sequence[Hit]]
) -> list[list[Hit]]:
    """Several queries' pools at once: through the reranker's own ``rerank_many`` when it has
    one (a model scores every pair of every pool in shared batches), else one pool at a time."""
    if len(queries) != len(pools):
        raise ValueError(f"{len(queries)} queries for {len(pools)} pools")
    many = getattr(reranker, "rerank_many", None)
    if many is not None:
        return many(queries, pools)
    return [reranker.rerank(query, pool) for query, pool in zip(queries, pools, strict=True)]
