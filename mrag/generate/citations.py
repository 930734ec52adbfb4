"""``[n]`` markers in an answer → the evidence they point at."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mrag.hits import SpanLocator, fields_first

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mrag.hits import Evidence

#: ``[1]``, ``[1, 2]``, ``[1; 3]``, ``[2-4]``; ``[1][2]`` is two matches.
_MARKER = re.compile(r"\[\s*(\d+(?:\s*[-–]\s*\d+)?(?:\s*[,;]\s*\d+(?:\s*[-–]\s*\d+)?)*)\s*\]")
_RANGE = re.compile(r"(\d+)\s*[-–]\s*(\d+)")
#: A range wider than this is not a citation (``[1-2000]``): each of its numbers is dropped.
_MAX_RANGE = 50


@dataclass
class Citation(SpanLocator):
    """Where an ``[n]`` of the answer points: one evidence item's locator fields."""

    n: int
    chunk_ids: tuple[str, ...]
    asset_id: str
    uri: str
    modality: str

    @classmethod
    def from_evidence(cls, item: Evidence) -> Citation:
        return cls(
            n=item.n,
            chunk_ids=tuple(item.chunk_ids),
            asset_id=item.asset_id,
            uri=item.uri,
            modality=item.modality,
            **item.locator_fields(),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; empty locator fields are dropped."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in fields_first(self).items()
            if v is not None
        }


def cited_numbers(answer_text: str) -> list[int]:
    """Every number the answer cites, in order of appearance, repeats included."""
    numbers: list[int] = []
    for match in _MARKER.finditer(answer_text):
        for part in re.split(r"\s*[,;]\s*", match.group(1).strip()):
            span = _RANGE.fullmatch(part)
            if span is None:
                numbers.append(int(part))
                continue
            lo, hi = int(span.group(1)), int(span.group(2))
            if lo <= hi and hi - lo <= _MAX_RANGE:
                numbers.extend(range(lo, hi + 1))
            else:
                numbers.extend((lo, hi))  # not a real range: both ends count (and drop)
    return numbers


def parse_citations(answer_text: str, evidence: Sequence[Evidence]) -> tuple[list[Citation], int]:
    """The evidence an answer cites, and how many of its citations point at nothing.

    Args:
        answer_text: the generated answer.
        evidence: the items the prompt numbered.

    Returns:
        (one :class:`Citation` per cited item, in order of first citation; the number of
        cited numbers, repeats included, that match no item's ``n`` and were dropped).
    """
    by_n = {item.n: item for item in evidence}
    citations: dict[int, Citation] = {}
    dropped = 0
    for n in cited_numbers(answer_text):
        item = by_n.get(n)
        if item is None:
            dropped += 1
        elif n not in citations:
            citations[n] = Citation.from_evidence(item)
    return list(citations.values()), dropped
