"""The write stage: embedded chunk rows → ``chunks``, ``errors`` and ``assets`` (exactly once).

The commit protocol (docs/architecture.md, "Commit protocol"): rows are appended, never joined
against the table, so a commit costs what its batch costs at any table size; an object's
``assets`` row (what a re-run skips by) is appended only in a commit after the one that holds
the last of its chunk and error rows. One committer per job drops repeated rows, so no key is
appended twice.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mrag.store import schema
from mrag.store.lance import Store

if TYPE_CHECKING:
    import pyarrow as pa

_ASSET_COLUMNS = ("asset_id", "uri", "size", "etag", "mtime", "fingerprint", "n_chunks",
                  "asset_modality", "asset_status")  # fmt: skip


#: Read errors that another try cannot fix (the object is over ``max_object_bytes``); any other
#: read error (an unreachable store, a vanished or unreadable object) leaves the object unmarked.
_PERMANENT_READ_ERRORS = frozenset({"ValueError"})


@dataclass
class Commit:
    """One commit the writer made: which table, the version it produced, its rows and time."""

    table: str
    version: int
    rows: int
    batch: int
    seconds: float
    at_s: float  # since the writer was made

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class _ObjectProgress:
    """An object whose rows are not all committed yet (its ``assets`` row waits for them)."""

    expected: int  # chunk rows, plus the error row of a partial or failed object
    asset: dict[str, Any]
    # Failed before its bytes were read (the store was unreachable, the object vanished or
    # is not readable yet): the error row is kept, no assets row, so the next run tries again.
    retry: bool = False
    keys: set[str] = dataclass_field(default_factory=set)


class LanceWriteStage:
    """Commits embedded chunk rows; one instance in one process (the ingest driver) is the one
    committer of a job, so no two writers ever append the same key (lancedb issue 3377).

    Takes rows from the decode → embed chain (see ``mrag.decode.stage``) and returns one small
    summary row per row it committed (``uri``, ``error_class``, ``asset_status``); rows it had
    committed before (a retried Ray task sends them again) are dropped. Safe to call from
    several threads: calls commit one at a time.

    The rows of the objects it writes must not be in the tables yet:
    :func:`mrag.pipelines.ingest.run_ingest` forgets every object it is about to write.

    Args:
        db_uri: the database.
        provenance: the models and weights the job checked the database against
            (:meth:`~mrag.store.lance.Store.ensure_tables`). Given, a row whose vector names
            other weights (an actor that loaded something else) is refused, and rows whose
            embed stage records no weights id get the job's.
        run_id: recorded in every commit's transaction properties (``mrag.run``).
    """

    def __init__(
        self,
        db_uri: str,
        provenance: schema.ChunkProvenance | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        self.store = Store(db_uri)
        self.provenance = provenance
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.commits: list[Commit] = []
        self.finished: dict[str, str] = {}  # uri → asset status, for objects marked done
        self._open: dict[str, _ObjectProgress] = {}
        self._retry_next_run: set[str] = set()  # finished without an assets row (read errors)
        self._schemas: dict[str, pa.Schema] = {}
        self._broken: BaseException | None = None
        self._batches = 0
        self._lock = threading.Lock()
        self._started = time.perf_counter()

    @property
    def incomplete(self) -> list[str]:
        """Objects with rows committed but not all of them (no ``assets`` row yet)."""
        return sorted(self._open)

    def __call__(self, rows: pa.Table) -> pa.Table:
        from mrag.errors import MragError

        with self._lock:
            if self._broken is not None:
                # Its record of committed rows may be ahead of the tables: writing on could mark
                # an object done without the rows of the failed commit. A new job redoes them.
                raise MragError(f"an earlier commit of this job failed: {self._broken!r}")
            try:
                return self._commit(rows)
            except BaseException as exc:
                self._broken = exc
                raise

    def _commit(self, rows: pa.Table) -> pa.Table:
        import pyarrow as pa
        import pyarrow.compute as pc

        rows = self._new_rows(rows)
        batch = self._batches
        self._batches += 1
        now = pa.scalar(datetime.now(UTC), pa.timestamp("us", tz="UTC"))
        failed = pc.not_equal(rows["error_class"], "")
        good, bad = rows.filter(pc.invert(failed)), rows.filter(failed)

        chunks = {name: good[name] for name in good.column_names}
        if self.provenance is not None:
            chunks.update(_weights_ids(good, self.provenance))
        chunks["metadata"] = pa.array(
            [json.dumps({"title": t}) if t else None for t in good["title"].to_pylist()],
            pa.string(),
        )
        self._append(
            schema.CHUNKS, _conform(chunks, self._schema(schema.CHUNKS), good.num_rows), batch
        )

        errors = {name: bad[name] for name in ("uri", "error_class", "fingerprint")}
        errors["error_id"] = _error_ids(bad)
        errors["stage"] = bad["error_stage"]
        errors["message"] = bad["error_message"]
        errors["created_at"] = pa.array([now] * bad.num_rows, now.type)
        self._append(schema.ERRORS, _conform(errors, schema.errors_schema(), bad.num_rows), batch)

        # Only now, after the commits that hold their last rows: the objects this batch
        # completed get their assets row, the mark a re-run skips by.
        completed = self._complete(rows)
        for asset in completed:
            self.finished[asset["uri"]] = asset["asset_status"]
        done = [a for a in completed if a["uri"] not in self._retry_next_run]
        assets = {name: pa.array([a[name] for a in done]) for name in _ASSET_COLUMNS}
        assets["modality"] = assets.pop("asset_modality")
        assets["status"] = assets.pop("asset_status")
        assets["ingested_at"] = pa.array([now] * len(done), now.type)
        assets["pipeline_version"] = pa.array([schema.PIPELINE_VERSION] * len(done), pa.string())
        self._append(schema.ASSETS, _conform(assets, schema.assets_schema(), len(done)), batch)
        return pa.table(
            {
                "uri": rows["uri"],
                "error_class": rows["error_class"],
                "asset_status": rows["asset_status"],
            }
        )

    def _new_rows(self, rows: pa.Table) -> pa.Table:
        """Drops rows committed before (or twice in this batch) and records the rest as
        pending rows of their objects."""
        keys = _row_keys(rows)
        keep = []
        for i, (uri, key) in enumerate(zip(rows["uri"].to_pylist(), keys, strict=True)):
            if uri in self.finished:
                continue
            progress = self._open.get(uri)
            if progress is None:
                asset = {name: rows[name][i].as_py() for name in _ASSET_COLUMNS}
                expected = asset["n_chunks"] + (asset["asset_status"] != "ok")
                retry = (
                    asset["asset_status"] == "failed"
                    and rows["error_stage"][i].as_py() == "read"
                    and rows["error_class"][i].as_py() not in _PERMANENT_READ_ERRORS
                )
                progress = self._open[uri] = _ObjectProgress(expected, asset, retry=retry)
            if key in progress.keys:
                continue
            progress.keys.add(key)
            keep.append(i)
        if len(keep) == rows.num_rows:
            return rows
        import pyarrow as pa

        return rows.take(pa.array(keep, pa.int64()))

    def _complete(self, rows: pa.Table) -> list[dict[str, Any]]:
        done = []
        for uri in dict.fromkeys(rows["uri"].to_pylist()):
            progress = self._open[uri]
            if len(progress.keys) >= progress.expected:
                self._open.pop(uri)
                if progress.retry:
                    self._retry_next_run.add(uri)
                done.append(progress.asset)
        return done

    def _append(self, name: str, rows: pa.Table, batch: int) -> None:
        if rows.num_rows == 0:
            return
        started = time.perf_counter()
        properties = {"mrag.run": self.run_id, "mrag.batch": str(batch)}
        version = self.store.append(name, rows, properties)
        ended = time.perf_counter()
        self.commits.append(
            Commit(name, version, rows.num_rows, batch, ended - started, ended - self._started)
        )

    def _schema(self, name: str) -> pa.Schema:
        # Read once: the job's tables keep their columns while it writes (ensure_tables ran).
        if name not in self._schemas:
            self._schemas[name] = self.store.open(name).schema
        return self._schemas[name]


def _weights_ids(rows: pa.Table, provenance: schema.ChunkProvenance) -> dict[str, pa.Array]:
    """The weights id columns for rows with vectors: checked against the job's, or filled in."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mrag.errors import MragError

    columns = {}
    for column, wanted in provenance.items():
        model_column, id_column = schema.vector_columns()[column]
        if column not in rows.column_names:
            continue
        has_vector = pc.is_valid(rows[column])
        if id_column not in rows.column_names:  # an embed stage that records no weights id
            ids = pa.repeat(pa.scalar(wanted.weights_id), rows.num_rows)
            columns[id_column] = pc.if_else(has_vector, ids, pa.scalar(None, pa.string()))
            continue
        made = rows.filter(has_vector)
        pairs = zip(made[model_column].to_pylist(), made[id_column].to_pylist(), strict=True)
        for model, weights_id in set(pairs):
            if not wanted.same_as(schema.VectorSource(model, weights_id or "")):
                raise MragError(
                    f"rows have {column} vectors made by {model} with {weights_id}, but the job "
                    f"checked the database for {wanted.model} with {wanted.weights_id}; "
                    "refusing to mix them in one column"
                )
    return columns


def _error_ids(rows: pa.Table) -> list[str]:
    return [
        schema.error_id(u, f, s)
        for u, f, s in zip(
            rows["uri"].to_pylist(),
            rows["fingerprint"].to_pylist(),
            rows["error_stage"].to_pylist(),
            strict=True,
        )
    ]


def _row_keys(rows: pa.Table) -> list[str]:
    """Each row's key in the table it goes to: ``chunk_id`` for chunks, ``error_id`` for
    error rows (``e:`` keeps the two apart)."""
    columns = ("chunk_id", "error_class", "uri", "fingerprint", "error_stage")
    return [
        f"e:{schema.error_id(uri, fingerprint, stage)}" if error_class else chunk_id
        for chunk_id, error_class, uri, fingerprint, stage in zip(
            *(rows[c].to_pylist() for c in columns), strict=True
        )
    ]


def _conform(columns: dict, table_schema: pa.Schema, n_rows: int) -> pa.Table:
    """A table in the target schema; columns a modality does not have are filled with nulls."""
    import pyarrow as pa

    arrays = []
    for field in table_schema:
        values = columns.get(field.name)
        if values is None:
            arrays.append(pa.nulls(n_rows, field.type))
        elif isinstance(values, pa.ChunkedArray | pa.Array):
            arrays.append(values.cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=table_schema)
