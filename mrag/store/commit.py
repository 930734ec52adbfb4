"""Driver side of the write: commits the fragments workers wrote, exactly once per row.

The commit protocol (docs/architecture.md, "Commit protocol"):

- one committer per job (the driver) turns receipts (:mod:`mrag.store.fragments`) into Lance
  append transactions, tagged with the run id, batch number and table
  (``transaction_properties``); two writers never append the same key (lancedb issue 3377);
- an object whose older rows may exist (``stale``) has them deleted before its first new row
  lands;
- an object's ``assets`` row (what a re-run skips by) is appended only after the commits that
  hold all its chunk and error rows;
- rows it has already (an upstream task that ran twice) are never committed again: a receipt
  with any is rewritten without them (the only time row data passes through the driver);
- a commit whose outcome is unknown (a time-out) is looked up in the table's transactions
  before it is tried again;
- commits are spaced by time: the first lands as soon as there is something to commit, then the
  wait doubles up to ``max_wait_s`` (commits per hour, and the manifests they rewrite, stay
  bounded on a long job), or sooner when ``max_rows`` are pending.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mrag.store import schema
from mrag.store.fragments import ASSET_FIELDS, conform
from mrag.store.lance import Store

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

#: Read errors that another try cannot fix (the object is over ``max_object_bytes``); any other
#: read error (an unreachable store, a vanished or unreadable object) leaves the object unmarked.
_PERMANENT_READ_ERRORS = frozenset({"ValueError"})
#: Objects whose final status is remembered (to drop a late duplicate and for the summary);
#: older ones are only counted, so the driver's memory does not grow with the corpus.
FINISHED_MEMORY = 1_000_000
COMMIT_ATTEMPTS = 4
#: Rows per fragment that a compaction while the job runs aims at (Lance's default).
COMPACT_ROWS = 1024 * 1024

#: Runs compaction tasks (``CompactionTask.json()``) on a dataset; returns the results as JSON.
Compactor = Callable[[str, "dict[str, str] | None", list[str]], list[str]]


def run_compaction_tasks(
    uri: str, storage_options: dict[str, str] | None, tasks: list[str]
) -> list[str]:
    """Runs compaction tasks in this process (a job hands them to Ray tasks instead)."""
    import lance
    from lance.optimize import CompactionTask

    dataset = lance.dataset(uri, storage_options=storage_options)
    return [CompactionTask.from_json(task).execute(dataset).json() for task in tasks]


@dataclass
class Commit:
    """One commit: which table, the version it made, its rows, fragments and time."""

    table: str
    version: int
    rows: int
    batch: int
    seconds: float
    at_s: float  # since the committer was made
    fragments: int = 0

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
    error_class: str = ""
    ordinals: set[int] = field(default_factory=set)


@dataclass
class _Pending:
    """Accepted receipts not committed yet."""

    chunks: list[dict[str, Any]] = field(default_factory=list)  # FragmentMetadata JSON
    errors: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    touched: dict[str, None] = field(default_factory=dict)  # objects, in arrival order
    forget: list[str] = field(default_factory=list)


class Committer:
    """Commits receipts of fragment writers into one database; one per job, in one process.

    Args:
        db_uri: the database (its tables exist: ``Store.ensure_tables`` ran).
        run_id: recorded in every commit's transaction properties (``mrag.run``).
        first_wait_s, max_wait_s: the wait between commits starts at ``first_wait_s`` after
            the first commit and doubles up to ``max_wait_s``.
        max_rows: pending rows that make a commit due whatever the wait.
        compact_after_fragments: a table that has got this many fragments since its last
            compaction is compacted after the commit (:meth:`compact`).
        compactor: runs the compaction's rewrite tasks (default: in this process).
    """

    def __init__(
        self,
        db_uri: str,
        *,
        run_id: str | None = None,
        first_wait_s: float = 5.0,
        max_wait_s: float = 60.0,
        max_rows: int = 1_000_000,
        compact_after_fragments: int = 1024,
        compactor: Compactor | None = None,
    ) -> None:
        from mrag import storage

        self.store = Store(db_uri)
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.storage_options = storage.lance_storage_options(db_uri) or None
        self.commits: list[Commit] = []
        self.finished: OrderedDict[str, str] = OrderedDict()  # uri → status, the latest ones
        self.status_counts: Counter[str] = Counter()  # ok / partial / failed objects
        self.error_counts: Counter[tuple[str, str]] = Counter()  # (status, error class)
        self.rewritten_receipts = 0
        self.dropped_rows = 0
        self.received_bytes = 0  # receipts' size: what reached the driver
        self.written_bytes = 0  # rows the workers wrote (never reached the driver)
        self.chunk_rows = 0
        self._open: dict[str, _ObjectProgress] = {}
        self._pending = _Pending()
        self._uris: dict[str, str] = {}
        self._batches = 0
        self._first_wait_s, self._max_wait_s, self._max_rows = first_wait_s, max_wait_s, max_rows
        self._compact_after = compact_after_fragments
        self._compactor = compactor or run_compaction_tasks
        self._fragments_since_compaction: Counter[str] = Counter()
        self.compactions: list[dict[str, Any]] = []
        self._wait_s = 0.0  # the first commit lands at once
        self._started = self._last_commit = time.perf_counter()

    # -- receipts -----------------------------------------------------------------------------

    def add(self, receipts: pa.Table) -> None:
        """Takes receipts (rows of :func:`~mrag.store.fragments.receipt_schema`): their
        fragments wait for the next :meth:`commit`."""
        self.received_bytes += receipts.nbytes
        for receipt in receipts.to_pylist():
            self._add_one(receipt)

    def _add_one(self, receipt: dict[str, Any]) -> None:
        self.written_bytes += receipt["bytes"]
        objects = receipt["objects"]
        held = [(entry, _expand(entry["spans"])) for entry in objects]
        fresh = [
            [o for o in dict.fromkeys(ordinals) if self._is_new(entry, o)]
            for entry, ordinals in held
        ]
        chunks = json.loads(receipt["chunk_fragments"])
        errors = json.loads(receipt["error_fragments"])
        if any(len(new) < len(ordinals) for new, (_, ordinals) in zip(fresh, held, strict=True)):
            chunks, errors = self._rewrite_without_repeats(chunks, errors, held, fresh)
        pending = self._pending
        for (entry, _), new in zip(held, fresh, strict=True):
            if not new:
                continue
            progress = self._progress(entry)
            progress.ordinals.update(new)
            if entry["error_class"]:
                progress.error_class = entry["error_class"]
            pending.touched[entry["uri"]] = None
            pending.rows += len(new)
        pending.chunks += chunks
        pending.errors += errors

    def _is_new(self, entry: dict[str, Any], ordinal: int) -> bool:
        if entry["uri"] in self.finished:
            return False
        progress = self._open.get(entry["uri"])
        return progress is None or ordinal not in progress.ordinals

    def _progress(self, entry: dict[str, Any]) -> _ObjectProgress:
        uri = entry["uri"]
        progress = self._open.get(uri)
        if progress is None:
            asset = {name: entry[name] for name in ASSET_FIELDS}
            retry = (
                asset["asset_status"] == "failed"
                and entry["error_stage"] == "read"
                and entry["error_class"] not in _PERMANENT_READ_ERRORS
            )
            expected = asset["n_chunks"] + (asset["asset_status"] != "ok")
            progress = self._open[uri] = _ObjectProgress(expected, asset, retry=retry)
            if entry["stale"]:
                self._pending.forget.append(uri)
        return progress

    def _rewrite_without_repeats(
        self,
        chunks: list[dict[str, Any]],
        errors: list[dict[str, Any]],
        held: list[tuple[dict[str, Any], list[int]]],
        fresh: list[list[int]],
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """New fragments holding only the receipt's rows this job has not got yet (read back
        from the written files, whose row order the receipt gives); the old files are left for
        ``mrag index --maintain``. Rare: a task upstream ran twice."""
        import pyarrow as pa

        self.rewritten_receipts += 1
        keep_chunk, keep_error = [], []
        seen: set[tuple[str, int]] = set()
        for (entry, ordinals), new in zip(held, fresh, strict=True):
            wanted = set(new)
            for ordinal in ordinals:
                is_error = entry["asset_status"] != "ok" and ordinal == entry["n_chunks"]
                key = (entry["uri"], ordinal)
                keep = ordinal in wanted and key not in seen
                seen.add(key)
                (keep_error if is_error else keep_chunk).append(keep)
        self.dropped_rows += keep_chunk.count(False) + keep_error.count(False)
        rewritten = []
        for name, fragments, keep in (
            (schema.CHUNKS, chunks, keep_chunk),
            (schema.ERRORS, errors, keep_error),
        ):
            table = self._read_fragments(name, fragments)
            rows = table.filter(pa.array(keep, pa.bool_())) if table.num_rows else table
            rewritten.append(self._write_local(name, rows))
        return rewritten[0], rewritten[1]

    # -- commits ------------------------------------------------------------------------------

    def due(self) -> bool:
        """Whether :meth:`commit` should run now (something pending, and the wait is over or
        enough rows are pending)."""
        if not self._pending.touched and not self._pending.chunks and not self._pending.errors:
            return False
        waited = time.perf_counter() - self._last_commit
        return waited >= self._wait_s or self._pending.rows >= self._max_rows

    def commit(self) -> list[dict[str, Any]]:
        """Commits what is pending: old rows of stale objects go, then the chunk and error
        fragments, then the ``assets`` rows of the objects now complete. Returns the assets
        rows it wrote (objects finished by this commit, retried read failures included)."""
        pending, self._pending = self._pending, _Pending()
        if pending.forget:
            self.store.forget(pending.forget)
        batch = self._batches
        self._batches += 1
        self._commit_fragments(schema.CHUNKS, pending.chunks, batch)
        self._commit_fragments(schema.ERRORS, pending.errors, batch)
        completed = []
        for uri in pending.touched:
            progress = self._open[uri]
            if len(progress.ordinals) >= progress.expected:
                del self._open[uri]
                completed.append(progress)
        self._write_assets(completed, batch)
        self._last_commit = time.perf_counter()
        self._wait_s = min(max(self._wait_s * 2, self._first_wait_s), self._max_wait_s)
        for name, count in list(self._fragments_since_compaction.items()):
            if count >= self._compact_after:
                self.compact(name)
        return [p.asset for p in completed]

    def compact(self, name: str) -> None:
        """Rewrites ``name``'s small fragments into large ones while the job runs, so the
        manifest every commit rewrites stays small on a long job. Lance plans the rewrite
        here; the rewriting (reading and writing the rows) runs in ``compactor`` (Ray tasks
        in a job); the result is committed here, as every other commit of the job."""
        import lance
        from lance.optimize import Compaction, RewriteResult

        started = time.perf_counter()
        dataset = lance.dataset(self._uri(name), storage_options=self.storage_options)
        plan = Compaction.plan(dataset, {"target_rows_per_fragment": COMPACT_ROWS})
        self._fragments_since_compaction[name] = 0
        if plan.num_tasks() == 0:
            return
        tasks = [task.json() for task in plan.tasks]
        results = self._compactor(dataset.uri, self.storage_options, tasks)
        metrics = Compaction.commit(dataset, [RewriteResult.from_json(r) for r in results])
        self.compactions.append(
            {
                "table": name,
                "fragments_removed": metrics.fragments_removed,
                "fragments_added": metrics.fragments_added,
                "seconds": round(time.perf_counter() - started, 3),
            }
        )

    def _write_assets(self, completed: list[_ObjectProgress], batch: int) -> None:
        import pyarrow as pa

        now = pa.scalar(datetime.now(UTC), pa.timestamp("us", tz="UTC"))
        done = []
        for progress in completed:
            asset = progress.asset
            status = asset["asset_status"]
            self.status_counts[status] += 1
            self.chunk_rows += asset["n_chunks"]
            if status != "ok":
                self.error_counts[(status, progress.error_class or "unknown")] += 1
            self.finished[asset["uri"]] = status
            if len(self.finished) > FINISHED_MEMORY:
                self.finished.popitem(last=False)
            if not progress.retry:
                done.append(asset)
        columns = {name: pa.array([a[name] for a in done]) for name in ASSET_FIELDS}
        columns["modality"] = columns.pop("asset_modality")
        columns["status"] = columns.pop("asset_status")
        columns["ingested_at"] = pa.array([now] * len(done), now.type)
        columns["pipeline_version"] = pa.array([schema.PIPELINE_VERSION] * len(done), pa.string())
        rows = conform(columns, schema.assets_schema(), len(done))
        self._commit_fragments(schema.ASSETS, self._write_local(schema.ASSETS, rows), batch)

    def _commit_fragments(self, name: str, fragments: list[dict[str, Any]], batch: int) -> None:
        """One append transaction of ``fragments``; an unknown outcome (a time-out, a broken
        connection) is looked up in the table's transactions before another try."""
        import lance
        from lance import LanceOperation, Transaction
        from lance.fragment import FragmentMetadata

        if not fragments:
            return
        started = time.perf_counter()
        uri = self._uri(name)
        dataset = lance.dataset(uri, storage_options=self.storage_options)
        transaction = Transaction(
            read_version=dataset.version,
            operation=LanceOperation.Append(
                [FragmentMetadata.from_json(json.dumps(f)) for f in fragments]
            ),
            transaction_properties={
                "mrag.run": self.run_id, "mrag.batch": str(batch), "mrag.table": name,
            },
        )  # fmt: skip
        version = None
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                version = self._lance_commit(uri, transaction).version
                break
            except (OSError, TimeoutError) as exc:
                version = self.committed_version(uri, dataset.version, transaction.uuid)
                if version is not None:
                    log.warning("%s commit %d: outcome unknown (%s), found as version %d",
                                name, batch, exc, version)  # fmt: skip
                    break
                if attempt == COMMIT_ATTEMPTS:
                    raise
                log.warning("%s commit %d failed (%s); trying again", name, batch, exc)
                time.sleep(min(2.0**attempt, 10.0))
        ended = time.perf_counter()
        rows = sum(f["physical_rows"] for f in fragments)
        self._fragments_since_compaction[name] += len(fragments)
        self.commits.append(
            Commit(
                name, version, rows, batch, ended - started, ended - self._started, len(fragments)
            )  # fmt: skip
        )

    def _lance_commit(self, uri: str, transaction: Any) -> Any:
        import lance

        return lance.LanceDataset.commit(uri, transaction, storage_options=self.storage_options)

    # -- files --------------------------------------------------------------------------------

    def _uri(self, name: str) -> str:
        if name not in self._uris:
            self._uris[name] = self.store.open(name).to_lance().uri
        return self._uris[name]

    def _write_local(self, name: str, rows: pa.Table) -> list[dict[str, Any]]:
        from lance.fragment import write_fragments

        if rows.num_rows == 0:
            return []
        fragments = write_fragments(
            rows,
            self._uri(name),
            schema=rows.schema,
            max_rows_per_file=rows.num_rows,
            storage_options=self.storage_options,
        )
        return [f.to_json() for f in fragments]

    def _read_fragments(self, name: str, fragments: list[dict[str, Any]]) -> pa.Table:
        import pyarrow as pa
        from lance.file import LanceFileReader

        tables = []
        for fragment in fragments:
            for data_file in fragment["files"]:
                path = f"{self._uri(name).rstrip('/')}/data/{data_file['path']}"
                reader = LanceFileReader(path, storage_options=self.storage_options)
                tables.append(reader.read_all().to_table())
        if not tables:
            return pa.table({})
        return pa.concat_tables(tables)

    def committed_version(self, uri: str, read_version: int, transaction_uuid: str) -> int | None:
        """The version a transaction made after ``read_version``, if it made one."""
        import lance

        dataset = lance.dataset(uri, storage_options=self.storage_options)
        for version in range(read_version + 1, dataset.latest_version + 1):
            try:
                found = dataset.read_transaction(version)
            except Exception:  # noqa: BLE001 - a version whose transaction file was cleaned up
                continue
            if found is not None and found.uuid == transaction_uuid:
                return version
        return None

    # -- state --------------------------------------------------------------------------------

    @property
    def incomplete(self) -> list[str]:
        """Objects with rows received but not all of them (no ``assets`` row)."""
        return sorted(self._open)


def _expand(spans: list[int]) -> list[int]:
    """``[0, 3, 5, 6]`` → ``[0, 1, 2, 5]``: the ordinals a receipt holds for an object."""
    return [
        o for start, end in zip(spans[::2], spans[1::2], strict=True) for o in range(start, end)
    ]
