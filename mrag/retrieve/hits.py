"""A retrieved chunk: what every search list, fusion, reranker and refiner passes along."""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class Hit:
    """One retrieved chunk; higher ``score`` is better.

    ``score`` is cosine similarity or BM25 when one list answered the query, else the fused
    score (RRF sum or calibrated score sum): compare scores within one mode only.
    """

    chunk_id: str
    asset_id: str
    uri: str
    modality: str
    score: float
    page: int | None = None
    start_s: float | None = None
    end_s: float | None = None
    char_start: int | None = None
    char_end: int | None = None
    text: str | None = None
    thumbnail: bytes | None = None

    def to_dict(self, include_thumbnail: bool = False) -> dict[str, Any]:
        """JSON-ready: empty locator fields are dropped, the thumbnail becomes base64 JPEG."""
        out = {k: v for k, v in asdict(self).items() if v is not None and k != "thumbnail"}
        if include_thumbnail and self.thumbnail:
            out["thumbnail_jpeg_b64"] = base64.b64encode(self.thumbnail).decode()
        return out
