"""Search over the ``chunks`` table: vector (per embedding space), full-text, and hybrid fusion.

Results are :class:`Hit` records. Hybrid search fuses ranked lists with reciprocal-rank fusion
(RRF), which needs no score calibration between cosine similarities and BM25.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, replace
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
    """One retrieved chunk; higher ``score`` is better.

    ``score`` is cosine similarity for vector search, BM25 for full-text search and the RRF sum
    for hybrid search: compare scores within one mode only.
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


@dataclass(frozen=True)
class SearchFilters:
    """Restricts a search; every field left ``None`` means no restriction."""

    modality: tuple[str, ...] | None = None
    uri_prefix: str | None = None
    page: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SearchFilters:
        """Validates user-supplied filters (JSON or CLI), naming the offending key."""
        if not data:
            return cls()
        if not isinstance(data, dict):
            raise MragError("filters: must be an object")
        unknown = set(data) - {"modality", "uri_prefix", "page"}
        if unknown:
            raise MragError(
                f"filters: unknown key {sorted(unknown)[0]!r}; allowed: modality, uri_prefix, page"
            )
        page = data.get("page")
        if page is not None and (isinstance(page, bool) or not isinstance(page, int) or page < 1):
            raise MragError("filters.page: must be a page number >= 1")
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
        return cls(modality=modality, uri_prefix=prefix, page=page)

    def to_where(self) -> str | None:
        """A LanceDB (DataFusion SQL) predicate with values quoted safely, or ``None``."""
        clauses = []
        if self.modality:
            clauses.append(
                "modality IN (" + ", ".join(schema.sql_literal(m) for m in self.modality) + ")"
            )
        if self.uri_prefix:
            clauses.append(f"starts_with(uri, {schema.sql_literal(self.uri_prefix)})")
        if self.page is not None:
            clauses.append(f"page = {int(self.page)}")
        return " AND ".join(clauses) or None


MODES = ("vector", "fts", "hybrid")
RRF_K = 60

# Query settings per vector index type, from the recall measurements in DESIGN.md.
# Keys are the index types LanceDB's list_indices() reports.
_INDEX_QUERY_SETTINGS = {"IvfPq": (80, 20), "IvfHnswSq": (40, 10)}


def reciprocal_rank_fusion(
    ranked_lists: list[list[Hit]], *, k: int, rrf_k: int = RRF_K
) -> list[Hit]:
    """Fuses ranked lists: each hit scores Σ 1/(rrf_k + rank); ties keep first-seen order."""
    fused: dict[str, Hit] = {}
    scores: dict[str, float] = {}
    for hits in ranked_lists:
        for rank, hit in enumerate(hits, 1):
            fused.setdefault(hit.chunk_id, hit)
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (rrf_k + rank)
    ordered = sorted(fused, key=lambda cid: -scores[cid])[:k]
    return [replace(fused[cid], score=round(scores[cid], 6)) for cid in ordered]


class Retriever:
    """Searches one database. Holds no model: callers embed queries (see ``mrag.query``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _columns(self, include_thumbnail: bool) -> list[str]:
        return [c for c in _HIT_COLUMNS if include_thumbnail or c != "thumbnail"]

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
        query = (
            table.search(vector, vector_column_name=column)
            .distance_type("cosine")
            .limit(k)
            .select([*self._columns(include_thumbnail), "_distance"])
        )
        settings = self._index_settings(table, column)
        if settings:
            query = query.nprobes(settings[0]).refine_factor(settings[1])
        where = " AND ".join(
            w for w in ((filters or SearchFilters()).to_where(), f"{column} IS NOT NULL") if w
        )
        query = query.where(where, prefilter=True)
        hits = []
        for row in query.to_arrow().to_pylist():
            distance = row.pop("_distance")
            hits.append(Hit(score=round(1.0 - float(distance), 6), **row))
        return hits

    def search_fts(
        self,
        text: str,
        *,
        k: int = 10,
        filters: SearchFilters | None = None,
        include_thumbnail: bool = False,
    ) -> list[Hit]:
        """BM25 full-text search over chunk ``text`` (needs the FTS index, see ``mrag index``)."""
        table = self.store.open(schema.CHUNKS)
        if table is None:
            return []
        if not any(i.index_type == "FTS" for i in table.list_indices()):
            raise MragError(
                f"{self.store.db_uri} has no full-text index yet; run `mrag index --db ...`"
            )
        query = (
            table.search(text, query_type="fts", fts_columns="text")
            .limit(k)
            .select([*self._columns(include_thumbnail), "_score"])
        )
        where = (filters or SearchFilters()).to_where()
        if where:
            query = query.where(where, prefilter=True)
        hits = []
        for row in query.to_arrow().to_pylist():
            score = row.pop("_score")
            hits.append(Hit(score=round(float(score), 6), **row))
        return hits

    def search(
        self,
        mode: str,
        *,
        k: int,
        text: str | None = None,
        clip_vector: np.ndarray | None = None,
        text_vector: np.ndarray | None = None,
        filters: SearchFilters | None = None,
        include_thumbnail: bool = False,
    ) -> list[Hit]:
        """One entry point for every mode; callers pass the query vectors they computed.

        ``vector`` searches each given embedding space, ``fts`` the text index, ``hybrid`` both;
        more than one ranked list is fused with RRF. Each list is retrieved deeper than ``k`` so
        fusion can promote items that rank well in several lists.
        """
        if mode not in MODES:
            raise MragError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        depth = max(k * 3, 30)
        common = {"filters": filters, "include_thumbnail": include_thumbnail}
        ranked: list[list[Hit]] = []
        if mode in ("vector", "hybrid"):
            if clip_vector is not None:
                ranked.append(self.search_vector(clip_vector, k=depth, column="clip", **common))
            if text_vector is not None:
                ranked.append(self.search_vector(text_vector, k=depth, column="text_vec", **common))
        if mode in ("fts", "hybrid") and text:
            ranked.append(self.search_fts(text, k=depth, **common))
        if not ranked:
            raise MragError(f"mode {mode!r} needs a text query")
        if len(ranked) == 1:
            return ranked[0][:k]
        return reciprocal_rank_fusion(ranked, k=k)

    @staticmethod
    def _index_settings(table: Any, column: str) -> tuple[int, int] | None:
        for index in table.list_indices():
            if column in index.columns and index.index_type in _INDEX_QUERY_SETTINGS:
                return _INDEX_QUERY_SETTINGS[index.index_type]
        return None
