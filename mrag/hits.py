"""The types every layer passes: a retrieved chunk (:class:`Hit`), a citable piece of evidence
(:class:`Evidence`) and where in its asset each one is (the locator fields: ``page``,
``page_end``, ``char_start``/``char_end``, ``start_s``/``end_s``).

Retrieval makes hits, rerankers reorder them, the refiner turns them into evidence and
generators cite it; each of those imports these types from here, none from another.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from mrag.locators import format_time_range

#: Chunks whose content is a picture with no text of its own (a video scene has a transcript).
VISUAL_MODALITIES: tuple[str, ...] = ("image", "pdf_page", "video_frame")


@dataclass(kw_only=True)
class Locator:
    """Where in its asset an item is: the page (PDF), the character span (text), the time span
    in seconds (audio, video). Fields that do not apply stay ``None``."""

    page: int | None = None
    char_start: int | None = None
    char_end: int | None = None
    start_s: float | None = None
    end_s: float | None = None

    @property
    def locator(self) -> str:
        """``p. 3-4``, ``chars 0-812``, ``00:12–00:15``: for a citation line or a result list."""
        return describe_locator(self)


@dataclass(kw_only=True)
class SpanLocator(Locator):
    """A locator over merged chunks, which may run over several pages (``page_end``)."""

    page_end: int | None = None

    def locator_fields(self) -> dict[str, Any]:
        """The locator fields alone, to hand to another item of the same place."""
        return {f.name: getattr(self, f.name) for f in fields(SpanLocator)}


def fields_first(item: Locator) -> dict[str, Any]:
    """``asdict`` with the item's own fields before the locator ones it inherits (a dataclass
    lists inherited fields first), so JSON reads ``chunk_id, …, page, …``."""
    values = asdict(item)
    where = {f.name for f in fields(SpanLocator)}
    return {k: v for k, v in values.items() if k not in where} | {
        k: v for k, v in values.items() if k in where
    }


def describe_locator(item: Locator) -> str:
    """``p. 3-4``, ``chars 0-812``, ``00:12–00:15``: where in its asset an item is, for a
    citation line or a result list."""
    parts = []
    if item.page is not None:
        page_end = getattr(item, "page_end", None)
        same = page_end in (None, item.page)
        parts.append(f"p. {item.page}" if same else f"p. {item.page}-{page_end}")
    if item.char_start is not None and item.char_end is not None:
        parts.append(f"chars {item.char_start}-{item.char_end}")
    if item.start_s is not None and item.end_s is not None:
        parts.append(format_time_range(item.start_s, item.end_s))
    return ", ".join(parts)


@dataclass
class Hit(Locator):
    """One retrieved chunk; higher ``score`` is better.

    ``score`` is cosine similarity or BM25 when one list answered the query, else the fused
    score (RRF sum or calibrated score sum): compare scores within one mode only.
    """

    chunk_id: str
    asset_id: str
    uri: str
    modality: str
    score: float
    text: str | None = None
    thumbnail: bytes | None = None

    def to_dict(self, include_thumbnail: bool = False) -> dict[str, Any]:
        """JSON-ready: empty locator fields are dropped, the thumbnail becomes base64 JPEG."""
        out = {k: v for k, v in fields_first(self).items() if v is not None and k != "thumbnail"}
        if include_thumbnail and self.thumbnail:
            out["thumbnail_jpeg_b64"] = base64.b64encode(self.thumbnail).decode()
        return out


@dataclass
class Evidence(SpanLocator):
    """One citable piece of evidence: one hit, or several merged neighbouring hits of one asset.

    Attributes:
        n: citation number, 1-based, in rank order.
        chunk_ids: the merged chunks, in document order.
        page, page_end: first and last page (equal for one page; ``None`` without pages).
        char_start, char_end: the span of ``text`` in the page's (or document's) text; exact
            unless merged over a gap (``text`` then joins the parts with a newline).
        start_s, end_s: the time span, for audio and video segments.
        score: the best member's score (as the reranker left it).
        duplicates: chunk ids dropped as duplicates of this item; ``other_uris`` their uris
            where they differ from ``uri``.
        truncated: the text was cut to fit the token budget (``char_end`` then ends the cut
            text when the span is exact).
        condensed: the text is the span's sentences that bear on the question, not the whole
            span (:func:`mrag.generate.condense.condense`; the locators still name the whole span).
        tokens: what this item costs of the token budget; ``images``: of the image budget.
    """

    n: int
    chunk_ids: tuple[str, ...]
    asset_id: str
    uri: str
    modality: str
    score: float
    text: str | None = None
    thumbnail: bytes | None = field(default=None, repr=False)
    duplicates: tuple[str, ...] = ()
    other_uris: tuple[str, ...] = ()
    truncated: bool = False
    condensed: bool = False
    tokens: int = 0
    images: int = 0

    def citation(self) -> str:
        """``[n] uri (locator)``: the line a generator's answer refers back to."""
        where = self.locator
        return f"[{self.n}] {self.uri}" + (f" ({where})" if where else "")

    def to_dict(self, include_thumbnail: bool = False) -> dict[str, Any]:
        """JSON-ready; empty fields are dropped, the thumbnail becomes base64 JPEG on request."""
        out = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in fields_first(self).items()
            if v is not None and v is not False and v != () and k != "thumbnail"  # 0 stays
        }
        if include_thumbnail and self.thumbnail:
            out["thumbnail_jpeg_b64"] = base64.b64encode(self.thumbnail).decode()
        return out
