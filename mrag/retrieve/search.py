"""Search over the ``chunks`` table: vector (per embedding space), full-text, and hybrid fusion.

Results are :class:`Hit` records. Hybrid search fuses ranked lists with reciprocal-rank fusion
(RRF), which needs no score calibration between cosine similarities and BM25.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mrag.errors import MragError
from mrag.store import schema

if TYPE_CHECKING:
    import numpy as np
    from pydantic import ValidatorFunctionWrapHandler

    from mrag.store.lance import Store

Modality = Literal["image", "text", "pdf_page", "video_frame", "video_segment", "audio_segment"]
MODALITIES: tuple[str, ...] = get_args(Modality)
SearchMode = Literal["vector", "fts", "hybrid"]
MODES: tuple[str, ...] = get_args(SearchMode)

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


# ------------------------------------------------------------------------------------------------
# Request validation, shared by the CLI, notebooks and the HTTP API (mrag.query.SearchRequest is
# the body of POST /v1/search): pydantic models whose errors read as one sentence naming the field.

#: The pydantic error type of our own messages (complete sentences that name the field).
INVALID = "mrag_invalid"
_MAX_SHOWN_CHARS = 40


def invalid(message: str) -> PydanticCustomError:
    """An error to raise inside a validator; ``message`` is shown to the user as it is.

    No context is passed, so pydantic leaves braces in ``message`` alone.
    """
    return PydanticCustomError(INVALID, message)


def explain(message: str) -> WrapValidator:
    """Replaces pydantic's words for a field's error with ``message`` plus the value given.

    The field keeps its declared type and constraints, so its JSON schema stays exact; only the
    error changes, from ``Input should be a valid integer`` to ``k must be an integer from 1 to
    100, got '3'``.
    """

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            shown = repr(value)
            if len(shown) > _MAX_SHOWN_CHARS:
                shown = shown[: _MAX_SHOWN_CHARS - 3] + "..."
            raise invalid(f"{message}, got {shown}") from None

    return WrapValidator(validate)


def error_message(exc: ValidationError) -> str:
    """The first problem of a failed validation as one sentence that names the field."""
    return describe_error(exc.errors(include_url=False)[0])


def describe_error(error: Any) -> str:
    """One pydantic error (an ``ErrorDetails`` dict) → ``<field>: <what is wrong>``.

    Our own errors (:func:`invalid`, :func:`explain`) already name the field; pydantic's get the
    dotted field path in front (``filters.modality[0]: Input should be 'image', ...``).
    """
    if error["type"] == INVALID:
        return error["msg"]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
    return f"{where.lstrip('.')}: {error['msg']}" if where else error["msg"]


def _one_or_many(value: Any) -> Any:
    return (value,) if isinstance(value, str) else value


class SearchFilters(BaseModel):
    """Restricts a search; a field left out (or null) means no restriction on it."""

    # A pydantic model (its docstring is the API schema's description) so the HTTP API publishes
    # it and the CLI, notebooks and the API reject the same filters with the same words.
    model_config = ConfigDict(frozen=True, extra="forbid")

    modality: Annotated[
        tuple[Modality, ...] | None,
        BeforeValidator(_one_or_many, json_schema_input_type=Modality | list[Modality] | None),
        explain(f"filters.modality must be one of {', '.join(MODALITIES)} or a list of them"),
    ] = Field(None, description="Only chunks of this modality (or of any of these).")
    uri_prefix: Annotated[StrictStr | None, explain("filters.uri_prefix must be a string")] = Field(
        None, description="Only chunks whose asset URI starts with this."
    )
    page: Annotated[
        StrictInt | None, Field(ge=1), explain("filters.page must be a page number >= 1")
    ] = Field(None, description="Only chunks of this page (PDF pages count from 1).")

    @model_validator(mode="before")
    @classmethod
    def _an_object_of_known_keys(cls, data: Any) -> Any:
        if data is None:
            return {}
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise invalid('filters must be an object like {"modality": "image"}')
        unknown = sorted(set(data) - set(cls.model_fields), key=str)
        if unknown:
            raise invalid(
                f"filters: unknown key {unknown[0]!r}; allowed: {', '.join(cls.model_fields)}"
            )
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SearchFilters:
        """Validates user-supplied filters (JSON or CLI); a :class:`MragError` names the key."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise MragError(error_message(exc)) from None

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
