"""Search over the ``chunks`` table: a retrieval plan of ranked lists, run concurrently, fused.

Results are :class:`Hit` records. Each query is planned (:mod:`mrag.retrieve.plan`: which
embedding space over which chunk modalities, and BM25), every list is retrieved in its own
thread, and more than one list is fused by weight (:mod:`mrag.retrieve.fusion`: RRF or
calibrated score fusion). The retriever keeps its table handle and the table's index metadata,
and refreshes both when the table's version changes.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
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

from mrag.config import ChunkModality as Modality
from mrag.errors import MragError
from mrag.hits import Hit
from mrag.retrieve.fusion import RankedList, fuse
from mrag.retrieve.plan import PlannedList, RetrievalPlan, build_plan, random_spaces
from mrag.spaces import BM25
from mrag.store import index_tuning, schema

if TYPE_CHECKING:
    from collections.abc import Mapping

    import numpy as np
    from pydantic import ValidatorFunctionWrapHandler

    from mrag.config import MragConfig, RetrievalConfig
    from mrag.store.index_tuning import QuerySettings
    from mrag.store.lance import Store

log = logging.getLogger(__name__)

MODALITIES: tuple[str, ...] = get_args(Modality)
SearchMode = Literal["vector", "fts", "hybrid"]
#: Columns BM25 can search: the chunk's text and its context (document title — section).
FTS_COLUMNS = ("text", "context")
MODES: tuple[str, ...] = get_args(SearchMode)

_HIT_COLUMNS = [
    "chunk_id", "asset_id", "uri", "modality", "page", "start_s", "end_s",
    "char_start", "char_end", "text", "thumbnail",
]  # fmt: skip


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

    time_range: Annotated[
        tuple[float, float] | None,
        explain("filters.time_range must be [start_s, end_s] in seconds"),
    ] = Field(
        None,
        description="Only audio and video chunks whose time span overlaps [start_s, end_s].",
    )

    @model_validator(mode="after")
    def _time_range_in_order(self) -> SearchFilters:
        if self.time_range is not None:
            start_s, end_s = self.time_range
            if not (0 <= start_s <= end_s < float("inf")):
                raise invalid("filters.time_range must be [start_s, end_s] with 0 <= start <= end")
        return self

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
        if self.time_range is not None:
            start_s, end_s = (float(v) for v in self.time_range)
            clauses.append(f"end_s >= {start_s!r} AND start_s <= {end_s!r}")
        return " AND ".join(clauses) or None


RRF_K = 60

# Vector query settings (nprobes, refine factor, ef) are the ones `mrag index` tuned to reach
# index.target_recall on this table and stored in its configuration; an index without such a
# record gets the settings measured at 1M rows, scaled to its partitions (index_tuning).


def reciprocal_rank_fusion(
    ranked_lists: list[list[Hit]], *, k: int, rrf_k: int = RRF_K
) -> list[Hit]:
    """Fuses ranked lists of equal weight: Σ 1/(rrf_k + rank); ties keep first-seen order."""
    return fuse([RankedList(hits) for hits in ranked_lists], k=k, method="rrf", rrf_k=rrf_k)


def _may_match(state: _TableState, item: PlannedList) -> bool:
    """Whether the table has rows the list could return (unknown spaces: assume so)."""
    present = state.space_modalities.get(item.space)
    if present is None:
        return True
    return bool(present & set(item.modalities)) if item.modalities else bool(present)


@dataclass
class _TableState:
    """What the retriever knows about one version of ``chunks``, refreshed when it changes."""

    table: Any
    version: int
    #: vector column → how its index is searched (tuned by `mrag index`, read per version)
    index_settings: dict[str, QuerySettings] = field(default_factory=dict)
    #: columns with a full-text index: ``text``, and ``context`` (title — section) when built
    fts_columns: tuple[str, ...] = ()
    #: space → the modalities of rows that have a vector in it (bm25: every modality present).
    space_modalities: dict[str, frozenset[str]] = field(default_factory=dict)
    columns: frozenset[str] = frozenset()

    @property
    def has_fts(self) -> bool:
        return "text" in self.fts_columns


class Retriever:
    """Searches one database. Holds no model: callers embed queries (see ``mrag.query``).

    Thread-safe; lists of one query run concurrently on the retriever's own threads. Build one
    per process and reuse it: it keeps the table handle and index metadata between queries.

    Args:
        store: the database.
        retrieval: lists, weights and fusion (``config.retrieval``); defaults when ``None``.
        random_by_space: ``{space: model has random weights}`` (:func:`random_spaces`).
    """

    def __init__(
        self,
        store: Store,
        retrieval: RetrievalConfig | None = None,
        random_by_space: Mapping[str, bool] | None = None,
    ) -> None:
        from mrag.config import RetrievalConfig

        self.store = store
        self.retrieval = retrieval or RetrievalConfig()
        self.random_by_space = dict(random_by_space or {})
        self._lock = threading.Lock()
        self._state: _TableState | None = None
        self._checked_at = 0.0
        self._threads: ThreadPoolExecutor | None = None

    @classmethod
    def for_config(cls, config: MragConfig) -> Retriever:
        from mrag.store.lance import Store

        return cls(Store(config.db_uri), config.retrieval, random_spaces(config))

    # -- table state -------------------------------------------------------------------------

    def table(self) -> Any | None:
        """The ``chunks`` table at its current version (``None`` before any ingest)."""
        state = self._table_state()
        return None if state is None else state.table

    def _table_state(self) -> _TableState | None:
        """The current table version's state; looks for a newer version at most every
        ``retrieval.refresh_interval_s`` (``checkout_latest`` is ~0.1 ms on a local disk)."""
        with self._lock:
            now = time.monotonic()
            state = self._state
            if state is None:
                table = self.store.open(schema.CHUNKS)
                if table is None:
                    return None
                self._state = self._load(table)
            elif now - self._checked_at >= self.retrieval.refresh_interval_s:
                try:
                    state.table.checkout_latest()
                    version = state.table.version
                except (OSError, RuntimeError, ValueError):  # dropped or replaced: reopen
                    table = self.store.open(schema.CHUNKS)
                    self._state = None if table is None else self._load(table)
                else:
                    if version != state.version:
                        self._state = self._load(state.table)
            self._checked_at = now
            return self._state

    def _load(self, table: Any) -> _TableState:
        import pyarrow.compute as pc

        state = _TableState(table=table, version=table.version)
        indices = table.list_indices()
        for index in indices:
            if index.index_type == "FTS":
                state.fts_columns += tuple(c for c in index.columns if c in FTS_COLUMNS)
        state.index_settings = index_tuning.query_settings(table, indices)
        names = set(table.schema.names)
        state.columns = frozenset(names)
        model_columns = {
            space: model_column
            for space, (model_column, _) in schema.vector_columns().items()
            if model_column in names
        }
        if "modality" in names:
            # Small string columns (a model column is set exactly where its vector is), read
            # once per table version, so no query scans a predicate over the vectors.
            rows = table.to_lance().to_table(columns=["modality", *model_columns.values()])
            modality = rows["modality"]
            state.space_modalities["bm25"] = frozenset(pc.unique(modality).drop_null().to_pylist())
            for space, column in model_columns.items():
                present = pc.filter(modality, pc.is_valid(rows[column]))
                found = pc.unique(present).drop_null().to_pylist()
                state.space_modalities[space] = frozenset(found)
        return state

    # -- planning and search -----------------------------------------------------------------

    def plan(
        self,
        *,
        query_kind: str,
        mode: str,
        filters: SearchFilters | None = None,
        fusion: str | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> RetrievalPlan:
        """The lists a query of this kind is searched with (callers embed for ``plan.spaces``).

        Lists that cannot match anything in the table as it is (no row of their modalities has
        their space's vector: a CLIP list over images in a text-only database) are left out,
        so no query encoder runs for them: the same hits, fewer forward passes.
        """
        plan = build_plan(
            self.retrieval,
            self.random_by_space,
            query_kind=query_kind,
            mode=mode,
            filter_modalities=(filters.modality if filters else None),
            fusion=fusion,
            weights=weights,
        )
        state = self._table_state()
        if state is None or not state.space_modalities:
            return plan
        kept = tuple(item for item in plan.lists if _may_match(state, item))
        return plan if len(kept) == len(plan.lists) else replace(plan, lists=kept)

    def _columns(self, include_thumbnail: bool) -> list[str]:
        return [c for c in _HIT_COLUMNS if include_thumbnail or c != "thumbnail"]

    def _modality_clause(self, state: _TableState, item: PlannedList) -> str | None:
        """``modality IN (...)`` when rows outside the list's modalities are in its space; none
        when the space holds only those (the scalar index on ``modality`` serves the rest)."""
        if not item.modalities:
            return None
        present = state.space_modalities.get(item.space)
        if present is not None and present <= set(item.modalities):
            return None
        return "modality IN (" + ", ".join(schema.sql_literal(m) for m in item.modalities) + ")"

    def _vector_list(
        self,
        state: _TableState,
        item: PlannedList,
        vector: np.ndarray,
        depth: int,
        filters: SearchFilters | None,
        include_thumbnail: bool,
    ) -> list[Hit]:
        # No "<column> IS NOT NULL": rows without a vector are never among the nearest, and the
        # predicate made LanceDB scan the whole table before every search (55 ms vs 13 ms).
        query = (
            state.table.search(vector, vector_column_name=item.space)
            .distance_type("cosine")
            .limit(depth)
            .select([*self._columns(include_thumbnail), "_distance"])
        )
        clauses = [(filters or SearchFilters()).to_where(), self._modality_clause(state, item)]
        where = " AND ".join(c for c in clauses if c)
        settings = state.index_settings.get(item.space)
        if settings:
            query = settings.apply(query, limit=depth, filtered=bool(where))
        if where:
            query = query.where(where, prefilter=True)
        hits = []
        for row in query.to_arrow().to_pylist():
            distance = row.pop("_distance")
            hits.append(Hit(score=round(1.0 - float(distance), 6), **row))
        return hits

    def _fts_list(
        self,
        state: _TableState,
        item: PlannedList | None,
        text: str,
        depth: int,
        filters: SearchFilters | None,
        include_thumbnail: bool,
    ) -> list[Hit]:
        if not state.has_fts:
            raise MragError(
                f"{self.store.db_uri} has no full-text index yet; run `mrag index --db ...`"
            )
        where = (filters or SearchFilters()).to_where()
        # The list's modalities are applied to the hits: text-less rows never match BM25, so
        # a prefilter would cost a pass over the index for nothing.
        keep = set(item.modalities) if item is not None and item.modalities else None
        columns = [*self._columns(include_thumbnail), "_score"]

        def bm25(column: str) -> list[dict[str, Any]]:
            query = state.table.search(text, query_type="fts", fts_columns=column)
            query = query.limit(depth).select(columns)
            if where:
                query = query.where(where, prefilter=True)
            return query.to_arrow().to_pylist()

        rows = {row["chunk_id"]: row for row in bm25("text")}
        boost = self.retrieval.fts_context_boost
        if boost > 0 and "context" in state.fts_columns:
            # The chunk's context (title — section) scores beside its text, summed: a question
            # naming a section's topic lifts that section's chunks. (LanceDB's MultiMatchQuery
            # takes the best column's score instead, so a context match never adds to a text
            # one.)
            for row in bm25("context"):
                known = rows.get(row["chunk_id"])
                if known is None:
                    rows[row["chunk_id"]] = {**row, "_score": boost * row["_score"]}
                else:
                    known["_score"] += boost * row["_score"]
        ranked = sorted(rows.values(), key=lambda row: -row["_score"])[:depth]
        hits = []
        for row in ranked:
            score = row.pop("_score")
            if keep is None or row["modality"] in keep:
                hits.append(Hit(score=round(float(score), 6), **row))
        return hits

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
        state = self._table_state()
        if state is None:
            return []
        item = PlannedList(name=column, space=column, modalities=(), weight=1.0)
        return self._vector_list(state, item, vector, k, filters, include_thumbnail)

    def search_fts(
        self,
        text: str,
        *,
        k: int = 10,
        filters: SearchFilters | None = None,
        include_thumbnail: bool = False,
    ) -> list[Hit]:
        """BM25 full-text search over chunk ``text`` (needs the FTS index, see ``mrag index``)."""
        state = self._table_state()
        if state is None:
            return []
        return self._fts_list(state, None, text, k, filters, include_thumbnail)

    def search(
        self,
        mode: str,
        *,
        k: int,
        text: str | None = None,
        vectors: Mapping[str, Any] | None = None,
        filters: SearchFilters | None = None,
        include_thumbnail: bool = False,
        fusion: str | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> list[Hit]:
        """One entry point for every mode; callers pass the query vectors they computed.

        A text query (``text`` given) is planned over the text lists, an image query (only
        ``vectors``, ``{"clip": ...}``) over the image lists; lists whose space has no vector
        in ``vectors`` are skipped.
        Each list is retrieved ``retrieval.list_depth`` deep (at least ``k``), so fusion can
        promote hits that rank well in several lists. A vector may be a ``Future`` still being
        computed: lists that do not need it (BM25, the other space) run meanwhile.
        """
        query_kind = "text" if text is not None else "image"
        plan = self.plan(
            query_kind=query_kind, mode=mode, filters=filters, fusion=fusion, weights=weights
        )
        vectors = {k: v for k, v in (vectors or {}).items() if v is not None}
        runnable = [
            item
            for item in plan.lists
            if (text if item.space == BM25 else vectors.get(item.space)) is not None
        ]
        if not runnable:  # nothing to search with, or the filters rule every list out
            if text is None and (mode == "fts" or not vectors):
                raise MragError(f"mode {mode!r} needs a text query")
            return []
        state = self._table_state()
        if state is None:
            return []
        # A space the database has no column for yet (no job has needed it) has nothing to find.
        runnable = [i for i in runnable if i.space == BM25 or i.space in state.columns]
        if not runnable:
            return []
        if mode == "hybrid" and not state.has_fts and len(runnable) > 1:
            # Hybrid still answers before `mrag index` has built the text index.
            runnable = [i for i in runnable if i.space != BM25] or runnable
        depth = max(k, self.retrieval.list_depth)

        def retrieve(item: PlannedList) -> list[Hit]:
            if item.space == BM25:
                return self._fts_list(state, item, text, depth, filters, include_thumbnail)
            vector = vectors[item.space]
            if isinstance(vector, Future):
                vector = vector.result()
            return self._vector_list(state, item, vector, depth, filters, include_thumbnail)

        if len(runnable) == 1:
            return retrieve(runnable[0])[:k]
        # Lists whose vector is ready (or that need none) start first, so none waits on a
        # Future while holding a thread another list could use; results keep the plan's order.
        pool = self._pool()
        order = sorted(runnable, key=lambda item: isinstance(vectors.get(item.space), Future))
        started = {item.name: pool.submit(retrieve, item) for item in order}
        results = [started[item.name].result() for item in runnable]
        ranked = [
            RankedList(
                hits, weight=item.weight, random_init=item.random_init, lexical=item.space == BM25
            )
            for item, hits in zip(runnable, results, strict=True)
        ]
        return fuse(
            ranked,
            k=k,
            method=plan.fusion,
            rrf_k=plan.rrf_k,
            window=plan.fusion_window,
            query=text,
        )

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(
                    max_workers=max(2, len(self.retrieval.lists)), thread_name_prefix="mrag-list"
                )
            return self._threads

    def index_settings(self, column: str) -> QuerySettings | None:
        """How searches of ``column`` use its vector index now (``None``: exact search)."""
        state = self._table_state()
        return None if state is None else state.index_settings.get(column)
