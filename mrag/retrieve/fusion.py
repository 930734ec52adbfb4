"""Weighted fusion of ranked lists: reciprocal rank (RRF) or calibrated score fusion.

Both take each list's weight. ``rrf`` scores a hit Σ wᵢ/(rrf_k + rankᵢ): ranks only, no
calibration needed. ``score`` (the default) puts every list's scores on one scale per query
and sums wᵢ·normᵢ (docs/architecture.md, "The query path"):

- **A fixed window.** A list's scores are measured from its ``window``-th best score, in
  units of the standard deviation of its top ``window`` scores: (s − floor) / σ, at least 0.
  How deep the list was retrieved (``k``, ``retrieval.list_depth``) changes nothing, so a
  search for 10 hits and one for 100 rank their common top alike. A BM25 list that matched
  fewer chunks than the window is padded with zeros, the score of a chunk without any query
  word: a term found in two chunks of a large corpus stands far above that floor, a word found
  everywhere does not.
- **No ceiling.** A hit that stands far above the rest of its list (a confident list, for
  this query) counts for more than a hit among many close ones. Qdrant's DBSF clips at
  μ + 3σ instead, which made a flat list of near-misses weigh as much as a decisive one.
- **Coordination for BM25.** Each BM25 hit's share is scaled by the fraction of the query's
  words it contains (Lucene's classic ``coord``): a chunk that shares one word of three with
  the question — "battery powered vehicle" against "a powerful bite" — cannot outvote the
  text encoder's confident first hit, while a chunk that holds every word of a keyword query
  keeps its full weight. Words are compared as the full-text index does, roughly: lower
  case, split at anything not a letter or digit, its English stop words dropped, and two words
  the same when they share their first five letters (a stand-in for its stemmer).

Lists from random-weight models (``random_init``) never displace the others' hits: a hit any
other list found ranks by those lists alone (random lists break ties), and hits only random
lists found come after all of them, ranked among themselves. With no other list, random lists
rank normally (an image query in the offline profile).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mrag.hits import Hit

FUSION_METHODS = ("rrf", "score")
#: The ``score`` fusion's window when a caller gives none (``retrieval.fusion_window``).
FUSION_WINDOW = 50

#: English stop words that LanceDB's default full-text tokenizer drops (lancedb 0.40: checked
#: against its index), so they never count against a chunk's coordination.
STOP_WORDS = frozenset(
    """a about after against all an and aren as at be been being below between both but by
    can couldn d did didn do doesn doing don each few for from further had hadn has hasn have
    haven having he her here hers herself him himself his how i if in into is isn it its
    itself just ll m me more most mustn my myself no nor not now o of off on or other our ours
    out over own re s same shan she should shouldn so some such t than that the their theirs
    them then there these they this those through to too under until up ve was wasn we were
    weren what when where which while who whom will with won wouldn y you your yours yourself
    yourselves""".split()
)
_WORD = re.compile(r"[^\W_]+")
#: Letters two words must share to count as one (a stand-in for the index's stemmer).
_STEM_LETTERS = 5


@dataclass
class RankedList:
    """One list's hits, best first, with its fusion weight and whether its model is random.

    ``lexical``: a BM25 list (zero-padded window, coordination with the query's words).
    """

    hits: list[Hit]
    weight: float = 1.0
    random_init: bool = False
    lexical: bool = False


def query_words(query: str) -> list[re.Pattern[str]]:
    """One pattern per distinct query word (stop words dropped) that finds it in lower-cased
    text: a word of up to five letters as the start of a word, a longer one by its first
    five letters; one or two letters only as a whole word."""
    patterns = []
    for word in dict.fromkeys(_WORD.findall(query.lower())):
        if word in STOP_WORDS:
            continue
        stem = re.escape(word[:_STEM_LETTERS])
        end = r"(?![^\W_])" if len(word) < 3 else ""
        patterns.append(re.compile(rf"(?<![^\W_]){stem}{end}"))
    return patterns


def coordination(words: list[re.Pattern[str]], text: str | None) -> float:
    """The share of the query's words found in ``text`` (1.0 when there is nothing to check)."""
    if not words or text is None:
        return 1.0
    lowered = text.lower()
    return sum(1 for word in words if word.search(lowered)) / len(words)


def _calibrated(ranked: RankedList, window: int, words: list[re.Pattern[str]]) -> list[float]:
    """Each hit's share: wᵢ · (s − floor) / σ over the list's top ``window`` scores."""
    scores = [hit.score for hit in ranked.hits]
    if not scores:
        return []
    top = scores[:window]
    if ranked.lexical and len(top) < window:
        top = top + [0.0] * (window - len(top))  # BM25 of a chunk with no query word
    mean = sum(top) / len(top)
    std = math.sqrt(sum((s - mean) ** 2 for s in top) / len(top))
    if std == 0:
        return [ranked.weight] * len(scores)
    floor = min(top)
    values = []
    for hit, score in zip(ranked.hits, scores, strict=True):
        value = ranked.weight * max(0.0, score - floor) / std
        if ranked.lexical and value > 0:
            value *= coordination(words, hit.text)
        values.append(value)
    return values


def _contributions(
    ranked: RankedList, method: str, rrf_k: int, window: int, words: list[re.Pattern[str]]
) -> list[float]:
    if method == "rrf":
        return [ranked.weight / (rrf_k + rank) for rank in range(1, len(ranked.hits) + 1)]
    return _calibrated(ranked, window, words)


def fuse(
    lists: list[RankedList],
    *,
    k: int,
    method: str = "rrf",
    rrf_k: int = 60,
    window: int = FUSION_WINDOW,
    query: str | None = None,
) -> list[Hit]:
    """The top ``k`` of the fused lists; ``score`` of each hit is its fused score.

    ``query``: the text query, for BM25's coordination (``score`` only; without it every BM25
    hit keeps its full share). Hits found only by random-weight lists are scaled to score no
    higher than the last hit another list found, so scores stay in rank order.
    """
    if method not in FUSION_METHODS:
        raise ValueError(f"fusion must be one of {', '.join(FUSION_METHODS)}, got {method!r}")
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    words = query_words(query) if query and method == "score" else []
    first: dict[str, Hit] = {}
    trusted: dict[str, float] = {}
    untrusted: dict[str, float] = {}
    for ranked in lists:
        into = untrusted if ranked.random_init else trusted
        values = _contributions(ranked, method, rrf_k, window, words)
        for hit, value in zip(ranked.hits, values, strict=True):
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
