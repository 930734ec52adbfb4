"""Vector search over the ``chunks`` table with filters; results are :class:`Hit` records."""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mrag.errors import MragError
from mrag.store import schema

if TYPE_CHECKING:
    import numpy as np

    from mrag.store.lance import Store

MODALITIES = ("image", "text", "pdf_page", "video_frame", "video_segment", "audio_segment")

_HIT_COLUMNS = [
    "chunk_id", "asset_id", "uri", "modality", "page", "start_s", "end_s",
    "char_start", "char_end", "text", "thumbnail",
]  # fmt: skip


@dataclass
class Hit:
    """One retrieved chunk. ``score`` is cosine similarity (higher is closer)."""

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


@dataclass(frozen=True)
class SearchFilters:
    """Restricts a search; every field left ``None`` means no restriction."""

    modality: tuple[str, ...] | None = None
    uri_prefix: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SearchFilters:
        """Validates user-supplied filters (JSON or CLI), naming the offending key."""
        if not data:
            return cls()
        unknown = set(data) - {"modality", "uri_prefix"}
        if unknown:
            raise MragError(
                f"filters: unknown key {sorted(unknown)[0]!r}; allowed: modality, uri_prefix"
            )
        modality = data.get("modality")
        if isinstance(modality, str):
            modality = [modality]
        if modality is not None:
            if not isinstance(modality, list) or not all(m in MODALITIES for m in modality):
                raise MragError(f"filters.modality: each must be one of {', '.join(MODALITIES)}")
            modality = tuple(modality)
        prefix = data.get("uri_prefix")
        if prefix is not None and not isinstance(prefix, str):
            raise MragError("filters.uri_prefix: must be a string")
        return cls(modality=modality, uri_prefix=prefix)

    def to_where(self) -> str | None:
        """A LanceDB (DataFusion SQL) predicate with values quoted safely, or ``None``."""
        clauses = []
        if self.modality:
            clauses.append("modality IN (" + ", ".join(_quote(m) for m in self.modality) + ")")
        if self.uri_prefix:
            clauses.append(f"starts_with(uri, {_quote(self.uri_prefix)})")
        return " AND ".join(clauses) or None


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class Retriever:
    """Searches one database. Holds no model: callers embed queries (see ``mrag.embed``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def search_vector(
        self,
        vector: np.ndarray,
        *,
        k: int = 10,
        filters: SearchFilters | None = None,
        column: str = "clip",
        include_thumbnail: bool = False,
    ) -> list[Hit]:
        """Nearest chunks to a unit-length query vector by cosine distance, best first."""
        table = self.store.open(schema.CHUNKS)
        if table is None:
            return []
        columns = [c for c in _HIT_COLUMNS if include_thumbnail or c != "thumbnail"]
        query = (
            table.search(vector, vector_column_name=column)
            .distance_type("cosine")
            .limit(k)
            .select([*columns, "_distance"])
        )
        where = (filters or SearchFilters()).to_where()
        if where:
            query = query.where(where, prefilter=True)
        hits = []
        for row in query.to_arrow().to_pylist():
            distance = row.pop("_distance")
            hits.append(Hit(score=round(1.0 - float(distance), 6), **row))
        return hits
