"""Vector indices that tune themselves to the table.

Which index is built follows the row count (:func:`index_ladder`). How it is queried is not a
table of guesses: after each build, recall@k against exact search is measured on a sample of
query vectors, and the query-time settings (``nprobes``, ``refine_factor``, HNSW's ``ef``) are
raised step by step, the most recall per added millisecond first, until the recall holds
``index.target_recall`` plus ``index.recall_margin`` (:func:`tune_query_settings`). "Holds"
means the sample's mean recall less two standard errors, so a target met on 200 queries is not
luck of the draw; settings that overshoot are then lowered again while the target still holds.
The settings chosen, the recall they reached and what they cost are stored in the table's own
configuration (the Lance manifest key ``mrag.vector_index.<column>``, carried by every later
version), where the retriever reads them with each table version it opens
(:func:`query_settings`); the index job puts the same record in its report.

The sample's queries are not rows of the table: a stored query would find itself and, through
it, its neighbours (an HNSW graph links each row to its nearest ones), which at 100k rows read
recall 0.957 where fresh queries got 0.766. Each query is a sampled row moved, in a random
direction, by the distance to that row's own nearest neighbour: a point as far from the data
as the data's points are from each other (at 100k the fresh queries' nearest row was 0.427
away, the sampled rows' 0.426). At 100k rows its recall was 0.00-0.03 below the fresh
queries' on IVF_HNSW_SQ, but 0.01-0.06 above it on IVF_PQ (316 x 128), the more the smaller
the refine factor (0.947 against 0.923 at nprobes 5, refine 5; 0.967 against 0.966 at refine
12): hence the margin on top of the target. Query vectors from another model (a text tower
searching image vectors) can sit elsewhere in the space; the bench
(``bench/query_latency.py --rows N``) checks the chosen settings on fresh held-out queries.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import lance

    from mrag.config import IndexConfig

    Progress = Callable[[str], None]

log = logging.getLogger(__name__)

#: Table configuration key prefix of a column's tuning record (JSON).
CONFIG_PREFIX = "mrag.vector_index."
#: Recall is measured, and refine factors are stated, at this k (the answer a user sees).
MEASURED_K = 10
#: LanceDB's name of each index type mrag builds, as ``list_indices()`` reports it.
LISTED_TYPES = {"IVF_PQ": "IvfPq", "IVF_HNSW_SQ": "IvfHnswSq"}
#: Each raise multiplies a setting by this (at least +1): ~8 steps from 2 to 50.
STEP = 1.5
#: The re-scored candidates never fall below 2x the limit (see :func:`refine_for`).
MIN_REFINE = 2
MAX_REFINE = 100  # 1,000 candidates re-scored exactly at k=10
START_EF = 2 * MEASURED_K
MAX_EF = 1_000
#: Measurements per tuning at most (each runs the whole sample once).
MAX_MEASUREMENTS = 60
HEARTBEAT_S = 10.0

#: Settings for an index that has no tuning record (built before mrag tuned its indices, or by
#: hand): (nprobes, refine factor, partitions) measured at 1M x 512-d (docs/architecture.md),
#: nprobes scaled by the index's own partition count, never below ``_MIN_UNTUNED_NPROBES``.
_UNTUNED = {"IvfPq": (80, 20, 1024), "IvfHnswSq": (40, 10, 256)}
_MIN_UNTUNED_NPROBES = 8


def refine_for(refine_factor: int, limit: int) -> int:
    """The refine factor for a search of ``limit`` rows, from one tuned at k=10.

    A deeper list keeps the same number of rows re-scored exactly (at least 2x its limit)
    instead of ``refine_factor x limit`` (500 random reads at limit 50: 14 ms of a 4.6 ms
    search).
    """
    return max(MIN_REFINE, math.ceil(refine_factor * MEASURED_K / max(1, limit)))


@dataclass(frozen=True)
class QuerySettings:
    """How one vector index is searched; values are stated for k=10 (:data:`MEASURED_K`)."""

    nprobes: int
    refine_factor: int = MIN_REFINE
    ef: int | None = None  # HNSW indices only

    def apply(self, query: Any, *, limit: int, filtered: bool = False) -> Any:
        """Sets these values on a LanceDB vector query of ``limit`` rows.

        A filtered query searches ``nprobes`` partitions and more only while fewer than
        ``limit`` rows have passed the filter, so a selective filter still fills its answer
        (Lance's ``maximum_nprobes``; unfiltered it would only add variance).
        """
        refine = refine_for(self.refine_factor, limit)
        if filtered:
            query = query.minimum_nprobes(self.nprobes).maximum_nprobes(0)
        else:
            query = query.nprobes(self.nprobes)
        query = query.refine_factor(refine)
        if self.ef is not None:
            # HNSW is asked for limit x refine candidates and refuses an ef below that.
            query = query.ef(max(self.ef, limit * refine))
        return query

    def describe(self) -> str:
        shown = f"nprobes={self.nprobes} refine_factor={self.refine_factor}"
        return shown + (f" ef={self.ef}" if self.ef is not None else "")


@dataclass(frozen=True)
class IndexSpec:
    """A vector index to build: its type and the build parameters chosen from the row count."""

    index_type: str  # a key of LISTED_TYPES
    num_partitions: int
    num_sub_vectors: int | None = None  # IVF_PQ only

    @property
    def listed_type(self) -> str:
        return LISTED_TYPES[self.index_type]

    @property
    def hnsw(self) -> bool:
        return self.index_type == "IVF_HNSW_SQ"

    def lancedb_config(self) -> Any:
        from lancedb.index import HnswSq, IvfPq

        if self.hnsw:
            return HnswSq(distance_type="cosine", num_partitions=self.num_partitions)
        return IvfPq(
            distance_type="cosine",
            num_partitions=self.num_partitions,
            num_sub_vectors=self.num_sub_vectors,
        )

    def describe(self) -> str:
        shown = f"{self.index_type} {self.num_partitions} partitions"
        return shown + (f" x {self.num_sub_vectors} sub-vectors" if self.num_sub_vectors else "")

    # -- the settings the tuner moves ------------------------------------------------------

    def knobs(self) -> tuple[str, ...]:
        return ("nprobes", "refine_factor", "ef") if self.hnsw else ("nprobes", "refine_factor")

    def start(self) -> QuerySettings:
        """The cheapest settings worth measuring: ~1.5 % of the partitions, minimal refine."""
        nprobes = max(1, math.ceil(self.num_partitions / 64))
        return QuerySettings(nprobes=nprobes, ef=START_EF if self.hnsw else None)

    def _bounds(self, knob: str) -> tuple[int, int]:
        return {
            "nprobes": (self.start().nprobes, self.num_partitions),
            "refine_factor": (MIN_REFINE, MAX_REFINE),
            "ef": (START_EF, MAX_EF),
        }[knob]

    def raised(self, settings: QuerySettings, knob: str) -> QuerySettings | None:
        """``settings`` with ``knob`` one step up; ``None`` at its cap."""
        value = getattr(settings, knob)
        cap = self._bounds(knob)[1]
        if value >= cap:
            return None
        return replace(settings, **{knob: min(cap, max(value + 1, math.ceil(value * STEP)))})

    def lowered(self, settings: QuerySettings, knob: str) -> QuerySettings | None:
        """``settings`` with ``knob`` one step down; ``None`` at its floor."""
        value = getattr(settings, knob)
        floor = self._bounds(knob)[0]
        if value <= floor:
            return None
        return replace(settings, **{knob: max(floor, min(value - 1, math.floor(value / STEP)))})


def index_ladder(n_rows: int, dim: int, config: IndexConfig) -> list[IndexSpec]:
    """The indices to try for ``n_rows`` vectors of ``dim`` dimensions, first choice first;
    empty below ``vector_min_rows`` (exact search is fast and exact there).

    IVF_HNSW_SQ (``rows_per_partition`` rows a partition) up to ``pq_min_rows``, IVF_PQ
    (``sqrt(n)`` partitions, sub-vectors of ``pq_sub_vector_dims`` dimensions) beyond, where
    the 4x larger SQ codes and the graphs stop fitting in memory. The next entry is built only
    when the first cannot reach the recall target at any query setting.
    """
    if n_rows < config.vector_min_rows:
        return []
    hnsw = IndexSpec("IVF_HNSW_SQ", max(1, min(4096, n_rows // config.rows_per_partition)))
    pq = IndexSpec(
        "IVF_PQ",
        max(1, min(65_536, round(math.sqrt(n_rows)))),
        num_sub_vectors=_sub_vectors(dim, config.pq_sub_vector_dims),
    )
    return [hnsw, pq] if n_rows < config.pq_min_rows else [pq, hnsw]


def _sub_vectors(dim: int, sub_vector_dims: int) -> int:
    """``dim / d`` for the smallest ``d >= sub_vector_dims`` that divides ``dim`` (PQ needs it
    to divide; 4 dimensions a code for 512-d is 128 sub-vectors, 1/16 of float32)."""
    for width in range(max(1, sub_vector_dims), dim + 1):
        if dim % width == 0:
            return dim // width
    return 1


# ------------------------------------------------------------------------------------------------
# Measuring recall


@dataclass
class RecallSample:
    """Query vectors and their exact nearest neighbours (row ids, best first)."""

    queries: np.ndarray  # (n, dim) float32
    truth: list[np.ndarray]
    #: each query's own row id (leave-one-out), or None for queries that are not rows
    own_rows: np.ndarray | None = None
    k: int = MEASURED_K


@dataclass(frozen=True)
class Measurement:
    """One setting tried: recall@k on the sample (its mean, and the mean less two standard
    errors: what the target is held to) and per-query latency."""

    settings: QuerySettings
    recall: float
    p50_ms: float
    p99_ms: float
    recall_low: float = 0.0

    def holds(self, target: float) -> bool:
        return self.recall_low >= target

    def describe(self) -> str:
        return (
            f"{self.settings.describe()}: recall@10 {self.recall:.3f} (>= {self.recall_low:.3f}), "
            f"p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms"
        )


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _matrix(column: Any, dim: int) -> np.ndarray:
    """A FixedSizeList column without nulls → (rows, dim) float32."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim).astype(np.float32)


def exact_neighbours(
    dataset: lance.LanceDataset,
    column: str,
    queries: np.ndarray,
    k: int = MEASURED_K,
    *,
    where: str | None = None,
    own_rows: np.ndarray | None = None,
    id_column: str | None = None,
    batch_rows: int = 65_536,
) -> list[np.ndarray]:
    """The exact top ``k`` rows by cosine similarity for each query, best first: one pass over
    the column in batches (memory: one batch and ``k + 1`` candidates per query).

    Args:
        where: only rows passing this filter (the filtered search's ground truth).
        own_rows: per query, a row id left out of its answer (a row's neighbours but itself).
        id_column: return this column's values (e.g. ``chunk_id``) instead of row ids.
    """
    return _exact(dataset, column, queries, k, where, own_rows, id_column, batch_rows)[0]


def _exact(
    dataset: lance.LanceDataset,
    column: str,
    queries: np.ndarray,
    k: int,
    where: str | None,
    own_rows: np.ndarray | None,
    id_column: str | None,
    batch_rows: int,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """:func:`exact_neighbours`, with the cosine similarity of each answer."""
    import pyarrow.compute as pc

    dim = queries.shape[1]
    unit_queries = _unit_rows(queries.astype(np.float32))
    keep = k + (1 if own_rows is not None else 0)
    n_queries = len(queries)
    best_sims = np.full((n_queries, 0), -np.inf, dtype=np.float32)
    best_ids: np.ndarray = np.empty((n_queries, 0), dtype=object if id_column else np.uint64)
    not_null = f"{column} IS NOT NULL"
    columns = [column] + ([id_column] if id_column else [])
    batches = dataset.to_batches(
        columns=columns,
        filter=f"({where}) AND {not_null}" if where else not_null,
        with_row_id=True,
        batch_size=batch_rows,
    )
    for batch in batches:
        if batch.num_rows == 0:
            continue
        vectors = batch.column(column)
        if vectors.null_count:  # the filter already left nulls out; be safe with other readers
            valid = pc.is_valid(vectors)
            batch = batch.filter(valid)
            vectors = batch.column(column)
        matrix = _unit_rows(_matrix(vectors, dim))
        row_ids = batch.column("_rowid").to_numpy()
        sims = unit_queries @ matrix.T
        if own_rows is not None:
            sims[own_rows[:, None] == row_ids[None, :]] = -np.inf
        ids = batch.column(id_column).to_numpy(zero_copy_only=False) if id_column else row_ids
        top = min(keep, sims.shape[1])
        part = np.argpartition(-sims, top - 1, axis=1)[:, :top]
        best_sims = np.concatenate([best_sims, np.take_along_axis(sims, part, axis=1)], axis=1)
        best_ids = np.concatenate([best_ids, ids[part]], axis=1)
        if best_sims.shape[1] > keep:
            order = np.argsort(-best_sims, axis=1, kind="stable")[:, :keep]
            best_sims = np.take_along_axis(best_sims, order, axis=1)
            best_ids = np.take_along_axis(best_ids, order, axis=1)
    order = np.argsort(-best_sims, axis=1, kind="stable")
    truth, similarities = [], []
    for i in range(n_queries):
        ranked = [j for j in order[i] if np.isfinite(best_sims[i, j])][:k]
        truth.append(best_ids[i, ranked])
        similarities.append(best_sims[i, ranked])
    return truth, similarities


def table_sample(
    dataset: lance.LanceDataset,
    column: str,
    n: int,
    *,
    rows_with_vectors: int,
    k: int = MEASURED_K,
    seed: int = 0,
) -> RecallSample:
    """``n`` query vectors like the table's own, but not in it, with their exact answers: each
    a sampled row moved by its distance to its nearest other row, in a random direction.

    Raises:
        ValueError: ``n`` is below 1.
        RuntimeError: the column holds no vectors; a recall measured on no query would read
            as a perfect 1.0.
    """
    if n < 1:
        raise ValueError(f"recall sample must be >= 1, got {n}")
    total = dataset.count_rows()
    rng = np.random.default_rng(seed)
    share = max(rows_with_vectors, 1) / max(total, 1)
    vectors: list[np.ndarray] = []
    own: list[int] = []
    seen: set[int] = set()
    draw = min(total, math.ceil(2 * n / share) + 8)
    for _ in range(4):  # a sparse column may need more than one draw
        positions = sorted(set(rng.choice(total, size=min(draw, total), replace=False).tolist()))
        positions = [p for p in positions if p not in seen]
        seen.update(positions)
        if positions:
            rows = dataset.take(positions, columns=[column, "_rowid"])
            for vector, row_id in zip(
                rows[column].to_pylist(), rows["_rowid"].to_pylist(), strict=True
            ):
                if vector is not None and len(vectors) < n:
                    vectors.append(np.asarray(vector, dtype=np.float32))
                    own.append(row_id)
        if len(vectors) >= n or len(seen) >= total:
            break
        draw *= 4
    if not vectors:
        raise RuntimeError(f"no {column} vectors to measure recall on")
    rows = _unit_rows(np.stack(vectors))
    own_rows = np.asarray(own, dtype=np.uint64)
    _, nearest = _exact(dataset, column, rows, 1, None, own_rows, None, 65_536)
    # Unit vectors: |a - b| = sqrt(2 - 2 cos). A row with no other row stays where it is.
    similarity = np.asarray([s[0] if len(s) else 1.0 for s in nearest], dtype=np.float32)
    distance = np.sqrt(np.clip(2.0 - 2.0 * similarity, 0.0, None))
    direction = _unit_rows(rng.standard_normal(rows.shape).astype(np.float32))
    queries = _unit_rows(rows + distance[:, None] * direction).astype(np.float32)
    truth = exact_neighbours(dataset, column, queries, k)
    return RecallSample(queries=queries, truth=truth, k=k)


def measure(
    table: Any,
    column: str,
    sample: RecallSample,
    settings: QuerySettings,
    *,
    where: str | None = None,
) -> Measurement:
    """Runs the sample's queries through LanceDB with ``settings`` applied as the retriever
    applies them (:meth:`QuerySettings.apply`); recall against the sample's exact answers."""
    recalls: list[float] = []
    took: list[float] = []
    limit = sample.k + (1 if sample.own_rows is not None else 0)
    for i, vector in enumerate(sample.queries):
        truth = sample.truth[i]
        started = time.perf_counter()
        query = (
            table.search(vector, vector_column_name=column)
            .distance_type("cosine")
            .limit(limit)
            .with_row_id(True)
            .select(["_distance"])
        )
        query = settings.apply(query, limit=limit, filtered=where is not None)
        if where:
            query = query.where(where, prefilter=True)
        found = query.to_arrow()["_rowid"].to_pylist()
        took.append(time.perf_counter() - started)
        if sample.own_rows is not None:
            own = int(sample.own_rows[i])
            found = [row for row in found if row != own]
        found = found[: sample.k]
        if len(truth):
            recalls.append(len(set(found) & set(truth.tolist())) / len(truth))
    if not recalls:
        raise RuntimeError(f"no query of the sample has an exact answer in {column}")
    ms = np.asarray(took) * 1000
    spread = float(np.std(recalls, ddof=1)) if len(recalls) > 1 else 0.0
    return Measurement(
        settings=settings,
        recall=float(np.mean(recalls)),
        p50_ms=float(np.percentile(ms, 50)),
        p99_ms=float(np.percentile(ms, 99)),
        recall_low=float(np.mean(recalls)) - 2 * spread / math.sqrt(len(recalls)),
    )


# ------------------------------------------------------------------------------------------------
# Tuning


@dataclass
class Tuning:
    """The settings a tuning chose, and every setting it measured on the way."""

    chosen: Measurement
    target: float
    steps: list[Measurement] = field(default_factory=list)

    @property
    def met(self) -> bool:
        return self.chosen.holds(self.target)


def _next_step(current: Measurement, tried: Sequence[Measurement], target: float) -> Measurement:
    """The cheapest move that reaches the target, else the most recall per added millisecond
    (latency differences below 5 % of the current p50 count as 5 %: that is noise), else, on a
    plateau, the move with the most recall."""
    reaching = [m for m in tried if m.holds(target)]
    if reaching:
        return min(reaching, key=lambda m: m.p50_ms)

    def gain(m: Measurement) -> float:
        extra_ms = max(m.p50_ms - current.p50_ms, 0.05 * current.p50_ms, 1e-3)
        return (m.recall - current.recall) / extra_ms

    best = max(tried, key=gain)
    if best.recall > current.recall:
        return best
    return max(tried, key=lambda m: (m.recall, -m.p50_ms))


def tune_query_settings(
    table: Any,
    column: str,
    spec: IndexSpec,
    sample: RecallSample,
    *,
    target: float,
    progress: Progress | None = None,
) -> Tuning:
    """Raises the query settings of ``spec``'s index on ``column`` until the sample's recall
    holds ``target`` (:meth:`Measurement.holds`) or every setting is at its cap, then lowers
    each setting again while the target still holds. Each setting measured is reported through
    ``progress``."""
    say = progress or (lambda line: log.info("%s", line))
    measured: dict[QuerySettings, Measurement] = {}

    def run(settings: QuerySettings) -> Measurement:
        if settings in measured:  # the way down may pass a setting the way up measured
            return measured[settings]
        result = measured[settings] = measure(table, column, sample, settings)
        tuning.steps.append(result)
        say(f"{column}: {result.describe()}")
        return result

    start = spec.start()
    # Loads the index into the cache first, so the first setting is not charged for it.
    few = min(len(sample.queries), 10)
    own = None if sample.own_rows is None else sample.own_rows[:few]
    warm = RecallSample(sample.queries[:few], sample.truth[:few], own, sample.k)
    measure(table, column, warm, start)
    tuning = Tuning(chosen=Measurement(start, 0.0, 0.0, 0.0), target=target)
    current = run(start)
    while not current.holds(target) and len(tuning.steps) < MAX_MEASUREMENTS:
        moves = [s for knob in spec.knobs() if (s := spec.raised(current.settings, knob))]
        if not moves:
            break
        current = _next_step(current, [run(s) for s in moves], target)
    if current.holds(target):
        for knob in spec.knobs():  # a setting raised early may no longer be needed
            while len(tuning.steps) < MAX_MEASUREMENTS:
                lower = spec.lowered(current.settings, knob)
                if lower is None:
                    break
                tried = run(lower)
                if not tried.holds(target):
                    break
                current = tried
    tuning.chosen = current
    return tuning


# ------------------------------------------------------------------------------------------------
# Building, and the record the query path reads


@dataclass
class TunedIndex:
    """What one build (or re-tuning) of a column's index chose and reached; stored as the
    table's ``mrag.vector_index.<column>`` configuration and shown in the run report."""

    column: str
    index_type: str
    num_partitions: int
    num_sub_vectors: int | None
    nprobes: int
    refine_factor: int
    ef: int | None
    recall_at_10: float
    #: the sample's mean recall less two standard errors: what the target is held to
    recall_at_10_low: float
    target_recall: float
    recall_margin: float
    p50_ms: float
    p99_ms: float
    rows: int
    sample: int
    build_s: float | None
    tune_s: float
    tuned_at: str
    measurements: int = 0

    @property
    def target_met(self) -> bool:
        return self.recall_at_10_low >= min(1.0, round(self.target_recall + self.recall_margin, 6))

    @property
    def settings(self) -> QuerySettings:
        return QuerySettings(nprobes=self.nprobes, refine_factor=self.refine_factor, ef=self.ef)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "target_met": self.target_met}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TunedIndex:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_tuning(
        cls,
        column: str,
        spec: IndexSpec,
        tuning: Tuning,
        *,
        target: float,
        margin: float,
        rows: int,
        sample: int,
        build_s: float | None,
        tune_s: float,
    ) -> TunedIndex:
        chosen = tuning.chosen
        return cls(
            column=column,
            index_type=spec.index_type,
            num_partitions=spec.num_partitions,
            num_sub_vectors=spec.num_sub_vectors,
            nprobes=chosen.settings.nprobes,
            refine_factor=chosen.settings.refine_factor,
            ef=chosen.settings.ef,
            recall_at_10=round(chosen.recall, 4),
            recall_at_10_low=round(chosen.recall_low, 4),
            target_recall=target,
            recall_margin=margin,
            p50_ms=round(chosen.p50_ms, 2),
            p99_ms=round(chosen.p99_ms, 2),
            rows=rows,
            sample=sample,
            build_s=None if build_s is None else round(build_s, 1),
            tune_s=round(tune_s, 1),
            tuned_at=datetime.now(UTC).isoformat(timespec="seconds"),
            measurements=len(tuning.steps),
        )


def stored_tunings(dataset: lance.LanceDataset) -> dict[str, TunedIndex]:
    """The tuning records in the table's configuration, by column (unreadable ones skipped)."""
    records = {}
    for key, value in dataset.config().items():
        if not key.startswith(CONFIG_PREFIX):
            continue
        try:
            record = TunedIndex.from_dict(json.loads(value))
        except (ValueError, TypeError) as exc:
            log.warning("ignoring the unreadable index tuning record %s: %s", key, exc)
            continue
        records[key[len(CONFIG_PREFIX) :]] = record
    return records


def save_tuning(table: Any, record: TunedIndex) -> None:
    """Stores ``record`` in the table's configuration (one small commit)."""
    table.to_lance().update_config({CONFIG_PREFIX + record.column: json.dumps(record.to_dict())})
    table.checkout_latest()  # the handle goes on from the version that commit made


def query_settings(table: Any, indices: Sequence[Any]) -> dict[str, QuerySettings]:
    """Settings per vector column for the vector indices in ``indices`` (LanceDB's
    ``list_indices()``): the tuning record when it describes an index of the same type, else
    the untuned fallback. Reads only the table's manifest (no index statistics) when every
    index has a record."""
    vector = [i for i in indices if i.index_type in _UNTUNED]
    if not vector:
        return {}
    records = stored_tunings(table.to_lance())
    settings = {}
    for index in vector:
        for column in index.columns:
            record = records.get(column)
            if record is not None and LISTED_TYPES.get(record.index_type) == index.index_type:
                settings[column] = record.settings
            else:
                settings[column] = untuned_settings(table, index)
    return settings


def _partitions(table: Any, index_name: str) -> int | None:
    try:
        stats = table.to_lance().stats.index_stats(index_name)
        return int(stats["indices"][0]["num_partitions"])
    except (KeyError, IndexError, TypeError, ValueError, OSError, RuntimeError):
        return None


def untuned_settings(table: Any, index: Any) -> QuerySettings:
    """Settings for an index without a tuning record: the ones measured at 1M x 512-d, nprobes
    scaled to the index's partitions (a fixed 40 probed every one of 25 partitions at 100k)."""
    nprobes, refine, measured_partitions = _UNTUNED[index.index_type]
    partitions = _partitions(table, index.name)
    if partitions is not None:
        scaled = math.ceil(nprobes * partitions / measured_partitions)
        nprobes = min(partitions, max(_MIN_UNTUNED_NPROBES, scaled))
    return QuerySettings(nprobes=nprobes, refine_factor=refine)


def spec_of(table: Any, index: Any, record: TunedIndex | None) -> IndexSpec | None:
    """The build parameters of an existing index (from its record, else its statistics)."""
    build_type = next((t for t, listed in LISTED_TYPES.items() if listed == index.index_type), None)
    if build_type is None:
        return None
    if record is not None and record.index_type == build_type:
        return IndexSpec(build_type, record.num_partitions, record.num_sub_vectors)
    partitions = _partitions(table, index.name)
    return None if partitions is None else IndexSpec(build_type, partitions)


def build_index(
    table: Any, column: str, spec: IndexSpec, *, progress: Progress | None
) -> tuple[IndexSpec, float]:
    """Builds (replacing) the index; returns what was built and the seconds taken.

    Lance trains fewer partitions than asked when a table is small (at least 256 rows each):
    the spec returned has the partitions it made. LanceDB reports no progress of its own, so a
    line with the elapsed time goes to ``progress`` every ``HEARTBEAT_S``.
    """
    say = progress or (lambda line: log.info("%s", line))
    say(f"{column}: building {spec.describe()}")
    started = time.perf_counter()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(HEARTBEAT_S):
            say(f"{column}: building {spec.index_type}, {time.perf_counter() - started:.0f} s")

    beat = threading.Thread(target=heartbeat, name="mrag-index-progress", daemon=True)
    beat.start()
    try:
        table.create_index(column, config=spec.lancedb_config(), replace=True)
    finally:
        done.set()
        beat.join()
    took = time.perf_counter() - started
    built = next((i for i in table.list_indices() if list(i.columns) == [column]), None)
    partitions = None if built is None else _partitions(table, built.name)
    if partitions is not None and partitions != spec.num_partitions:
        spec = replace(spec, num_partitions=partitions)
    say(f"{column}: built {spec.describe()} in {took:.1f} s")
    return spec, took


def tune_index(
    table: Any,
    column: str,
    spec: IndexSpec,
    sample: RecallSample,
    *,
    rows: int,
    config: IndexConfig,
    build_s: float | None,
    progress: Progress | None = None,
) -> TunedIndex:
    """Tunes the query settings of the index on ``column`` and stores the record."""
    started = time.perf_counter()
    tuning = tune_query_settings(
        table, column, spec, sample, target=held_level(config), progress=progress
    )
    record = TunedIndex.from_tuning(
        column,
        spec,
        tuning,
        target=config.target_recall,
        margin=config.recall_margin,
        rows=rows,
        sample=len(sample.queries),
        build_s=build_s,
        tune_s=time.perf_counter() - started,
    )
    save_tuning(table, record)
    return record


def held_level(config: IndexConfig) -> float:
    """The recall the sample's lower bound is held to: the target plus the margin for
    queries made from stored rows, at most 1."""
    return min(1.0, round(config.target_recall + config.recall_margin, 6))


def recall_sample(
    table: Any, column: str, *, rows: int, config: IndexConfig, progress: Progress | None = None
) -> RecallSample:
    """The sample a column's index is tuned on (``config.recall_sample`` queries)."""
    say = progress or (lambda line: log.info("%s", line))
    started = time.perf_counter()
    sample = table_sample(table.to_lance(), column, config.recall_sample, rows_with_vectors=rows)
    say(
        f"{column}: exact top-{MEASURED_K} of {len(sample.queries)} sample queries over {rows:,} "
        f"rows in {time.perf_counter() - started:.1f} s"
    )
    return sample


def build_tuned_index(
    table: Any,
    column: str,
    *,
    rows: int,
    dim: int,
    config: IndexConfig,
    progress: Progress | None = None,
) -> TunedIndex | None:
    """Builds the first index of :func:`index_ladder` and tunes it; builds the next only when
    the target cannot be reached. ``None`` when the column stays on exact search."""
    specs = index_ladder(rows, dim, config)
    if not specs:
        return None
    say = progress or (lambda line: log.info("%s", line))
    sample = recall_sample(table, column, rows=rows, config=config, progress=progress)
    record = None
    for spec in specs:
        built, build_s = build_index(table, column, spec, progress=progress)
        record = tune_index(
            table, column, built, sample, rows=rows, config=config, build_s=build_s,
            progress=progress,
        )  # fmt: skip
        if record.target_met:
            break
        say(
            f"{column}: {spec.describe()} reached recall@10 {record.recall_at_10:.3f} at most "
            f"(target {config.target_recall} + margin {config.recall_margin})"
        )
    return record
