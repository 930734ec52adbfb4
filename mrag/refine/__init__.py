"""The refiner: reranked hits → the evidence a generator cites.

Four steps, in this order, each on the output of the one before:

1. **Drop near-duplicates.** A hit is dropped when a better-ranked kept hit is the same chunk;
   or of the same asset, modality and page with char (or time) spans overlapping by at least
   ``duplicate_overlap`` of the shorter one; or of the same asset and locator with no spans
   (the same image or page stored under two uris: ``asset_id`` is the hash of the bytes); or,
   for ``duplicate_vector_modalities`` (visual by default), of the same modality with a stored
   vector whose cosine to a kept one is at least ``duplicate_cosine`` (a re-encoded copy of a
   photo). The kept hit records the dropped ``chunk_id``\\ s and their uris.
   Chunker windows overlap by design (``chunk_text``'s ``overlap_tokens``, ~20 %): such a small
   overlap is adjacency, merged in step 3, not duplication.
2. **Diversity.** At most ``max_per_asset`` chunks per asset, taken in rank order; with
   ``mmr_lambda`` set, by maximal marginal relevance instead (relevance from the rank, since
   reranked scores of mixed pools share no scale; similarity by stored-vector cosine, or 1 for
   two hits of one asset when a vector is missing).
3. **Merge adjacent spans.** Hits of one asset and modality merge when their char spans on the
   same page touch, overlap or are at most ``merge_gap_chars`` apart (chunks are exact slices of
   the page or document text, so overlaps are stitched by offset and the text stays exact), when
   they are consecutive PDF pages, or when their time spans are at most ``merge_gap_s`` apart. A
   merged item takes the rank and score of its best member.
4. **Budget.** In rank order, items are kept while they fit ``max_tokens`` (``count_tokens``, the
   chunker's word-level approximation by default) and ``max_images`` (a visual item costs one
   image per page). An item that does not fit is cut to the tokens left when at least
   ``min_item_tokens`` are left, else skipped, and the next ones are still tried.

Evidence items are numbered ``n`` = 1, 2, … in rank order, for ``[n]`` citations.

Optionally, :func:`mrag.generate.condense.condense` then cuts each long text item down to
the sentences that bear on the question, extractively (the text encoder) or by asking a
generator to quote them, keeping ``n``, chunk ids and locators, so citations still map back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mrag.chunk import cut_to_tokens
from mrag.errors import ConfigError
from mrag.hits import VISUAL_MODALITIES, Evidence

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy as np

    from mrag.hits import Hit
    from mrag.vectors import VectorSource


__all__ = [
    "AssetGroup",
    "Evidence",
    "RefineSettings",
    "cut_to_tokens",
    "group_by_asset",
    "refine",
]


@dataclass(frozen=True)
class RefineSettings:
    """How hits become evidence (see the module docstring for the order of the steps).

    Attributes:
        duplicate_overlap: share of the shorter span two hits of one asset must overlap by to
            be duplicates (0 < x <= 1).
        duplicate_cosine: stored-vector cosine at or above which two hits are duplicates;
            ``None`` turns the vector check off.
        duplicate_vector_modalities: modalities the vector check applies to.
        max_per_asset: chunks kept per asset (``None``: no cap).
        mmr_lambda: weight of relevance against novelty for MMR (``None``: rank order).
        merge_adjacent: merge neighbouring spans of one asset.
        merge_gap_chars: largest gap between two char spans that still merge (the white space
            between two chunker windows).
        merge_gap_s: largest gap between two time spans that still merge.
        max_tokens: token budget of all evidence text.
        max_images: most images (visual items, one per PDF page) in the evidence.
        min_item_tokens: an item is cut to fit only if at least this many tokens are left.
    """

    duplicate_overlap: float = 0.5
    duplicate_cosine: float | None = 0.97
    duplicate_vector_modalities: tuple[str, ...] = VISUAL_MODALITIES
    max_per_asset: int | None = 3
    mmr_lambda: float | None = None
    merge_adjacent: bool = True
    merge_gap_chars: int = 8
    merge_gap_s: float = 1.0
    max_tokens: int = 2000
    max_images: int = 4
    min_item_tokens: int = 32

    def __post_init__(self) -> None:
        checks = (
            ("duplicate_overlap", self.duplicate_overlap, 0 < self.duplicate_overlap <= 1,
             "a number in (0, 1]"),
            ("duplicate_cosine", self.duplicate_cosine,
             self.duplicate_cosine is None or -1 <= self.duplicate_cosine <= 1,
             "null or a number in [-1, 1]"),
            ("max_per_asset", self.max_per_asset,
             self.max_per_asset is None or self.max_per_asset >= 1, "null or an integer >= 1"),
            ("mmr_lambda", self.mmr_lambda,
             self.mmr_lambda is None or 0 <= self.mmr_lambda <= 1, "null or a number in [0, 1]"),
            ("merge_gap_chars", self.merge_gap_chars, self.merge_gap_chars >= 0, ">= 0"),
            ("merge_gap_s", self.merge_gap_s, self.merge_gap_s >= 0, ">= 0"),
            ("max_tokens", self.max_tokens, self.max_tokens >= 0, "an integer >= 0"),
            ("max_images", self.max_images, self.max_images >= 0, "an integer >= 0"),
            ("min_item_tokens", self.min_item_tokens, self.min_item_tokens >= 1, ">= 1"),
        )  # fmt: skip
        for name, value, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"refine.{name} must be {allowed}, got {value!r}")


@dataclass
class AssetGroup:
    """The items (hits or evidence) of one asset, for a search grouped by asset; ``score`` is
    its best item's."""

    asset_id: str
    uri: str
    modality: str
    score: float
    items: list[Any]

    def to_dict(self, include_thumbnail: bool = False) -> dict[str, Any]:
        return {
            "asset_id": self.asset_id,
            "uri": self.uri,
            "modality": self.modality,
            "score": self.score,
            "items": [item.to_dict(include_thumbnail) for item in self.items],
        }


def group_by_asset(items: Sequence[Any], *, max_per_asset: int | None = None) -> list[AssetGroup]:
    """Hits or evidence items (anything with ``asset_id``, ``uri``, ``modality``, ``score``)
    grouped by asset; groups ordered by their best item, items in rank order."""
    groups: dict[str, AssetGroup] = {}
    for item in items:
        group = groups.get(item.asset_id)
        if group is None:
            groups[item.asset_id] = AssetGroup(
                item.asset_id, item.uri, item.modality, item.score, [item]
            )
        elif max_per_asset is None or len(group.items) < max_per_asset:
            group.items.append(item)
    return list(groups.values())


def refine(
    hits: Sequence[Hit],
    settings: RefineSettings | None = None,
    *,
    vectors: VectorSource | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> list[Evidence]:
    """Reranked hits (best first) → numbered evidence within the budget.

    Args:
        hits: the reranked pool, best first (deeper than what the generator gets is fine: the
            budget decides how much is used).
        settings: the refine settings; defaults when ``None``.
        vectors: stored vectors by ``chunk_id`` (the ``chunks`` table, a mapping or a fetcher,
            as for the CLIP reranker) for the vector duplicate check and MMR; without them
            those checks fall back as the module docstring says.
        count_tokens: the generator's token count, e.g. ``lambda s: len(tok(s).input_ids)``;
            ``None`` uses :func:`mrag.chunk.approximate_tokens`.
    """
    from mrag.chunk import approximate_tokens

    settings = settings or RefineSettings()
    count = count_tokens or approximate_tokens
    pool = list(hits)
    if not pool:
        return []
    unit = _unit_vectors(pool, vectors, settings)
    kept = _drop_duplicates(pool, unit, settings)
    kept = _diversify(kept, unit, settings)
    groups = _merge(kept, settings) if settings.merge_adjacent else [[m] for m in kept]
    return _fit_budget([_evidence(group) for group in groups], count, settings)


# ------------------------------------------------------------------------------------------------
# Step 1: duplicates


@dataclass(eq=False)  # identity: list.remove must take this member, not an equal one
class _Member:
    """A kept hit with its first-stage rank and what was dropped as its duplicates."""

    hit: Hit
    rank: int
    duplicates: list[Hit] = field(default_factory=list)


def _unit_vectors(
    hits: list[Hit], vectors: VectorSource | None, settings: RefineSettings
) -> dict[str, np.ndarray]:
    if vectors is None or (settings.duplicate_cosine is None and settings.mmr_lambda is None):
        return {}
    from mrag.vectors import as_vector_fetcher, unit_rows

    ids = [hit.chunk_id for hit in hits]
    return unit_rows(as_vector_fetcher(vectors)(ids), ids)


def _overlap_share(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Overlap of two [start, end) spans as a share of the shorter one (0 when disjoint)."""
    overlap = min(a[1], b[1]) - max(a[0], b[0])
    shorter = min(a[1] - a[0], b[1] - b[0])
    if overlap <= 0:
        return 0.0
    return 1.0 if shorter <= 0 else overlap / shorter


def _char_span(hit: Hit) -> tuple[int, int] | None:
    if hit.char_start is None or hit.char_end is None:
        return None
    return hit.char_start, hit.char_end


def _time_span(hit: Hit) -> tuple[float, float] | None:
    if hit.start_s is None or hit.end_s is None:
        return None
    return hit.start_s, hit.end_s


def _is_duplicate(
    kept: Hit, hit: Hit, unit: dict[str, np.ndarray], settings: RefineSettings
) -> bool:
    if kept.chunk_id == hit.chunk_id:
        return True
    if kept.modality != hit.modality:
        return False
    if kept.asset_id == hit.asset_id and kept.page == hit.page:
        spans = [
            (_char_span(kept), _char_span(hit)),
            (_time_span(kept), _time_span(hit)),
        ]
        compared = [(a, b) for a, b in spans if a is not None and b is not None]
        if compared and _overlap_share(*compared[0]) >= settings.duplicate_overlap:
            return True
        if all(a is None and b is None for a, b in spans):
            return True  # same asset and locator: the same bytes under another uri
    if (
        settings.duplicate_cosine is not None
        and hit.modality in settings.duplicate_vector_modalities
        and kept.chunk_id in unit
        and hit.chunk_id in unit
    ):
        return float(unit[kept.chunk_id] @ unit[hit.chunk_id]) >= settings.duplicate_cosine
    return False


def _drop_duplicates(
    hits: list[Hit], unit: dict[str, np.ndarray], settings: RefineSettings
) -> list[_Member]:
    kept: list[_Member] = []
    for rank, hit in enumerate(hits):
        original = next((m for m in kept if _is_duplicate(m.hit, hit, unit, settings)), None)
        if original is None:
            kept.append(_Member(hit, rank))
        elif hit.chunk_id != original.hit.chunk_id:
            original.duplicates.append(hit)
    return kept


# ------------------------------------------------------------------------------------------------
# Step 2: diversity


def _diversify(
    members: list[_Member], unit: dict[str, np.ndarray], settings: RefineSettings
) -> list[_Member]:
    cap = settings.max_per_asset or math.inf
    per_asset: dict[str, int] = {}
    if settings.mmr_lambda is None:
        out = []
        for member in members:
            if per_asset.get(member.hit.asset_id, 0) < cap:
                per_asset[member.hit.asset_id] = per_asset.get(member.hit.asset_id, 0) + 1
                out.append(member)
        return out
    lam, total = settings.mmr_lambda, len(members)
    relevance = {id(m): 1.0 - i / total for i, m in enumerate(members)}
    left, chosen = list(members), []
    while left:
        allowed = [m for m in left if per_asset.get(m.hit.asset_id, 0) < cap]
        if not allowed:
            break

        def marginal(member: _Member) -> float:
            redundancy = max((_similarity(member.hit, c.hit, unit) for c in chosen), default=0.0)
            return lam * relevance[id(member)] - (1 - lam) * redundancy

        best = max(allowed, key=marginal)  # max keeps the first (best-ranked) of ties
        chosen.append(best)
        left.remove(best)
        per_asset[best.hit.asset_id] = per_asset.get(best.hit.asset_id, 0) + 1
    return chosen


def _similarity(a: Hit, b: Hit, unit: dict[str, np.ndarray]) -> float:
    if a.chunk_id in unit and b.chunk_id in unit:
        return float(unit[a.chunk_id] @ unit[b.chunk_id])
    return 1.0 if a.asset_id == b.asset_id else 0.0


# ------------------------------------------------------------------------------------------------
# Step 3: merging neighbours


def _adjacent(a: _Member, b: _Member, settings: RefineSettings) -> bool:
    x, y = a.hit, b.hit
    if x.asset_id != y.asset_id or x.modality != y.modality:
        return False
    xc, yc = _char_span(x), _char_span(y)
    if xc is not None and yc is not None:
        gap = settings.merge_gap_chars
        return x.page == y.page and yc[0] <= xc[1] + gap and xc[0] <= yc[1] + gap
    xt, yt = _time_span(x), _time_span(y)
    if xt is not None and yt is not None:
        gap_s = settings.merge_gap_s
        return yt[0] <= xt[1] + gap_s and xt[0] <= yt[1] + gap_s
    if xc is None and yc is None and xt is None and yt is None:
        return x.page is not None and y.page is not None and abs(x.page - y.page) == 1
    return False


def _merge(members: list[_Member], settings: RefineSettings) -> list[list[_Member]]:
    """Groups of mutually reachable neighbours, in the rank order of their best member."""
    groups: list[list[_Member]] = []
    for member in members:
        touching = [g for g in groups if any(_adjacent(m, member, settings) for m in g)]
        if not touching:
            groups.append([member])
            continue
        target = touching[0]  # the best-ranked group: groups are created in rank order
        target.append(member)
        for other in touching[1:]:  # this member bridges two groups (chunk 2 between 1 and 3)
            target.extend(other)
            groups.remove(other)
    return groups


def _document_order(member: _Member) -> tuple[float, float, float]:
    hit = member.hit
    return (
        hit.page if hit.page is not None else -1,
        hit.char_start if hit.char_start is not None else -1,
        hit.start_s if hit.start_s is not None else -1,
    )


def _evidence(group: list[_Member]) -> tuple[Evidence, bool]:
    """A group → (unnumbered evidence, whether its text is an exact slice at ``char_start``)."""
    best = min(group, key=lambda m: m.rank)
    ordered = sorted(group, key=_document_order)
    hits = [m.hit for m in ordered]
    first = hits[0]
    text, exact = _joined_text(hits)
    pages = [h.page for h in hits if h.page is not None]
    duplicates = [d for m in ordered for d in m.duplicates]
    evidence = Evidence(
        n=0,
        chunk_ids=tuple(h.chunk_id for h in hits),
        asset_id=first.asset_id,
        uri=best.hit.uri,
        modality=first.modality,
        score=best.hit.score,
        text=text,
        page=min(pages) if pages else None,
        page_end=max(pages) if pages else None,
        char_start=first.char_start,
        char_end=max((h.char_end for h in hits if h.char_end is not None), default=None),
        start_s=first.start_s,
        end_s=max((h.end_s for h in hits if h.end_s is not None), default=None),
        thumbnail=best.hit.thumbnail,
        duplicates=tuple(d.chunk_id for d in duplicates),
        other_uris=tuple(dict.fromkeys(d.uri for d in duplicates if d.uri != best.hit.uri)),
    )
    return evidence, exact


def _joined_text(hits: list[Hit]) -> tuple[str | None, bool]:
    """Members' texts in document order; char-span slices are stitched at their offsets."""
    texts = [h.text for h in hits if h.text]
    if not texts:
        return None, False
    spans = [_char_span(h) for h in hits]
    aligned = all(
        s is not None and h.text is not None and len(h.text) == s[1] - s[0]
        for h, s in zip(hits, spans, strict=True)
    )
    if not aligned:  # pages, time segments, or text that is not the slice its span says
        separator = "\n\n" if hits[0].modality in VISUAL_MODALITIES else "\n"
        return separator.join(texts), False
    text, end, exact = hits[0].text, spans[0][1], True
    for hit, (start, stop) in zip(hits[1:], spans[1:], strict=True):
        if start > end:
            text += "\n" + hit.text  # the white space between two windows is not stored
            exact = False
        elif stop > end:
            text += hit.text[end - start :]
        end = max(end, stop)
    return text, exact


# ------------------------------------------------------------------------------------------------
# Step 4: budget


def _fit_budget(
    items: list[tuple[Evidence, bool]], count: Callable[[str], int], settings: RefineSettings
) -> list[Evidence]:
    tokens_left, images_left = settings.max_tokens, settings.max_images
    out: list[Evidence] = []
    for evidence, exact in items:
        if evidence.modality in VISUAL_MODALITIES:
            pages = (evidence.page_end - evidence.page + 1) if evidence.page is not None else 1
            evidence.images = pages
        if evidence.images > images_left:
            continue
        evidence.tokens = count(evidence.text) if evidence.text else 0
        if evidence.tokens > tokens_left:
            if tokens_left < settings.min_item_tokens or not evidence.text:
                continue
            evidence.text = cut_to_tokens(evidence.text, tokens_left, count)
            evidence.tokens = count(evidence.text)
            evidence.truncated = True
            if exact and evidence.char_start is not None:
                evidence.char_end = evidence.char_start + len(evidence.text)
        tokens_left -= evidence.tokens
        images_left -= evidence.images
        evidence.n = len(out) + 1
        out.append(evidence)
    return out
