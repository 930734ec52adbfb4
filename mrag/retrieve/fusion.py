"""Weighted fusion of ranked lists: reciprocal rank (RRF) or distribution-based score fusion.

Both take each list's weight. ``rrf`` scores a hit Σ wᵢ/(rrf_k + rankᵢ): ranks only, no
calibration needed. ``score`` calibrates each list's own scores (cosine, BM25) per query to
[0, 1] by the list's distribution — (s − (μ − 3σ)) / 6σ, clipped, as Qdrant's DBSF does — and
sums wᵢ·normᵢ, so a list whose top hit stands far above the rest weighs more for that query.

Lists from random-weight models (``random_init``) never displace the others' hits: a hit any
other list found ranks by those lists alone (random lists break ties), and hits only random
lists found come after all of them, ranked among themselves. With no other list, random lists
rank normally (an image query in the offline profile).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mrag.hits import Hit

FUSION_METHODS = ("rrf", "score")


@dataclass
class RankedList:
    """One list's hits, best first, with its fusion weight and whether its model is random."""

    hits: list[Hit]
    weight: float = 1.0
    random_init: bool = False


def _contributions(ranked: RankedList, method: str, rrf_k: int) -> list[float]:
    if method == "rrf":
        return [ranked.weight / (rrf_k + rank) for rank in range(1, len(ranked.hits) + 1)]
    scores = [hit.score for hit in ranked.hits]
    if len(scores) < 2:
        return [ranked.weight] * len(scores)
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    if std == 0:
        return [ranked.weight] * len(scores)
    low, span = mean - 3 * std, 6 * std
    return [ranked.weight * min(1.0, max(0.0, (s - low) / span)) for s in scores]


def fuse(lists: list[RankedList], *, k: int, method: str = "rrf", rrf_k: int = 60) -> list[Hit]:
    """The top ``k`` of the fused lists; ``score`` of each hit is its fused score.

    Hits found only by random-weight lists are scaled to score no higher than the last hit
    another list found, so scores stay in rank order.
    """
    if method not in FUSION_METHODS:
        raise ValueError(f"fusion must be one of {', '.join(FUSION_METHODS)}, got {method!r}")
    first: dict[str, Hit] = {}
    trusted: dict[str, float] = {}
    untrusted: dict[str, float] = {}
    for ranked in lists:
        into = untrusted if ranked.random_init else trusted
        for hit, value in zip(ranked.hits, _contributions(ranked, method, rrf_k), strict=True):
            first.setdefault(hit.chunk_id, hit)
            into[hit.chunk_id] = into.get(hit.chunk_id, 0.0) + value
    # sorted() is stable: equal keys keep first-seen order.
    tier1 = sorted(trusted, key=lambda c: (-trusted[c], -untrusted.get(c, 0.0)))
    tier2 = sorted((c for c in untrusted if c not in trusted), key=lambda c: -untrusted[c])
    scored = [(c, trusted[c]) for c in tier1]
    if tier2:
        scale = 1.0
        top = untrusted[tier2[0]]
        if tier1 and top > 0:
            scale = min(1.0, trusted[tier1[-1]] / top)
        scored += [(c, untrusted[c] * scale) for c in tier2]
    return [replace(first[c], score=round(s, 6)) for c, s in scored[:k]]
