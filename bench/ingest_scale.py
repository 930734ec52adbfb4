"""Write-path scale benchmark: commit time per 10k rows as the ``chunks`` table grows.

    .venv/bin/python bench/ingest_scale.py [--sizes 10000,250000,500000,1000000,2000000]

Synthetic rows (512-d CLIP vectors, a short text, 10 chunks per object) are bulk-appended to
grow the tables to each size (not measured); at each size ``--commits`` batches of 10k rows
go through the job's real write path (:class:`mrag.store.writer.LanceWriteStage`: chunk
commit, then the assets commit of the objects the batch completes; warmed up first in a
scratch database) and the median seconds per 10k rows is printed. Also printed, not part of
the ratio: ``forget`` of 500 absent uris (the planning step a job runs once per 500 objects to
redo), with the indices brought up to date as the end of every ingest does. Last line:
``commit_cost_growth=<ratio>`` (cost at the largest size / cost at the smallest).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DIM = 512
CHUNKS_PER_OBJECT = 10
COMMIT_ROWS = 10_000


def _vectors(n: int, seed: int, dim: int = DIM):
    import numpy as np
    import pyarrow as pa

    values = np.random.default_rng(seed).standard_normal(n * dim, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values), dim)


def embedded_rows(first_object: int, n_rows: int, seed: int, dim: int = DIM):
    """Rows as the embed stage hands them to the writer: whole objects of 10 chunks."""
    import pyarrow as pa

    objects = [first_object + i // CHUNKS_PER_OBJECT for i in range(n_rows)]
    uris = [f"s3://bench/docs/{o:09d}.txt" for o in objects]
    n = n_rows
    return pa.table(
        {
            "uri": uris,
            "size": pa.array([1000] * n, pa.int64()),
            "etag": ["e"] * n,
            "mtime": [0.0] * n,
            "fingerprint": ["e:1000"] * n,
            "asset_id": [f"a{o:09d}" for o in objects],
            "asset_modality": ["text"] * n,
            "asset_status": ["ok"] * n,
            "n_chunks": pa.array([CHUNKS_PER_OBJECT] * n, pa.int32()),
            "chunk_id": [f"a{o:09d}#{i % CHUNKS_PER_OBJECT}" for i, o in enumerate(objects)],
            "ordinal": pa.array([i % CHUNKS_PER_OBJECT for i in range(n)], pa.int32()),
            "stale": [False] * n,
            "modality": ["text"] * n,
            "text": ["river mountain bread engine violin harbor lantern orchard"] * n,
            "title": pa.nulls(n, pa.string()),
            "error_stage": [""] * n,
            "error_class": [""] * n,
            "error_message": [""] * n,
            "clip": _vectors(n, seed, dim),
            "clip_model": ["bench"] * n,
        }
    )


def fill(store, first_object: int, n_rows: int, seed: int) -> int:
    """Grows the tables by ``n_rows`` chunks (whole objects) in large appends, unmeasured."""
    from mrag.store import schema
    from mrag.store.fragments import conform as _conform

    step = 200_000
    done = 0
    while done < n_rows:
        n = min(step, n_rows - done)
        rows = embedded_rows(first_object + done // CHUNKS_PER_OBJECT, n, seed + done)
        chunk_schema = store.open(schema.CHUNKS).schema
        columns = {name: rows[name] for name in rows.column_names}
        store.append(schema.CHUNKS, _conform(columns, chunk_schema, n))
        first = rows.filter(_first_rows(rows))
        assets = {name: first[name] for name in ("asset_id", "uri", "size", "etag", "mtime",
                                                 "fingerprint", "n_chunks")}  # fmt: skip
        assets["modality"] = first["asset_modality"]
        assets["status"] = first["asset_status"]
        store.append(schema.ASSETS, _conform(assets, schema.assets_schema(), first.num_rows))
        done += n
    return first_object + n_rows // CHUNKS_PER_OBJECT


def _first_rows(rows):
    import pyarrow as pa

    return pa.array([i % CHUNKS_PER_OBJECT == 0 for i in range(rows.num_rows)])


class _SimulatedClock:
    """``time`` for the committer: seconds advance only when the simulation says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def long_job(db: str, *, hours: float, rows_per_s: float, fragment_rows: int, **cadence) -> dict:
    """A job of ``hours`` simulated hours at ``rows_per_s``: real fragment files (small rows)
    and real commits, on a simulated clock; returns commits per hour and the manifest's size."""
    import os

    from mrag.store import commit as commit_module
    from mrag.store import schema
    from mrag.store.fragments import FragmentWriter, WriteTargets
    from mrag.store.lance import Store

    store = Store(db)
    store.ensure_tables({"clip": 8, "text_vec": 8})
    writer = FragmentWriter(WriteTargets.for_store(store))
    clock = _SimulatedClock()
    real_time, commit_module.time = commit_module.time, clock
    try:
        committer = commit_module.Committer(db, **cadence)
        end_s, next_object, seed = hours * 3600, 0, 0
        while clock.now < end_s:
            committer.add(writer(embedded_rows(next_object, fragment_rows, seed, dim=8)))
            next_object += fragment_rows // CHUNKS_PER_OBJECT
            seed += 1
            clock.now += fragment_rows / rows_per_s
            if committer.due():
                committer.commit()
        committer.commit()
    finally:
        commit_module.time = real_time
    dataset = store.open(schema.CHUNKS).to_lance()
    versions = os.path.join(dataset.uri, "_versions")
    latest = max((os.path.join(versions, f) for f in os.listdir(versions)), key=os.path.getmtime)
    transactions = len(committer.commits) + len(committer.compactions)
    return {
        "commits_per_hour": transactions / hours,
        "chunk_commits_per_hour": sum(c.table == schema.CHUNKS for c in committer.commits) / hours,
        "manifest_bytes": os.path.getsize(latest),
        "fragments": len(dataset.get_fragments()),
        "rows": dataset.count_rows(),
        "compactions": len(committer.compactions),
    }


def cadence_report(root: str, hours: float, rows_per_s: float, fragment_rows: int) -> None:
    """The job's cadence (first commit at once, waits doubling to 60 s, compaction after 1,024
    fragments) beside a fixed 5 s cadence without compaction, over the same simulated job."""
    print(f"long job: {hours:g} simulated hours at {rows_per_s:g} rows/s, fragments of "
          f"{fragment_rows} rows", flush=True)  # fmt: skip
    print(f"{'cadence':>34} {'commits/h':>10} {'chunk commits/h':>16} {'manifest KiB':>13} "
          f"{'fragments':>10} {'rows':>9}")  # fmt: skip
    for label, cadence in (
        ("every 5 s, no compaction (before)", {"first_wait_s": 5, "max_wait_s": 5,
                                               "compact_after_fragments": 10**9}),
        ("5 s doubling to 60 s + compaction", {"first_wait_s": 5, "max_wait_s": 60}),
    ):  # fmt: skip
        found = long_job(f"{root}/{label[:5].strip()}", hours=hours, rows_per_s=rows_per_s,
                         fragment_rows=fragment_rows, **cadence)  # fmt: skip
        print(f"{label:>34} {found['commits_per_hour']:>10.0f} "
              f"{found['chunk_commits_per_hour']:>16.0f} {found['manifest_bytes'] / 1024:>13.1f} "
              f"{found['fragments']:>10} {found['rows']:>9}", flush=True)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,250000,500000,1000000,2000000")
    parser.add_argument("--commits", type=int, default=7, help="10k-row commits per size")
    parser.add_argument("--out", help="database folder (default: a temp dir, removed after)")
    parser.add_argument("--job-hours", type=float, default=1.0, help="simulated long job")
    parser.add_argument("--job-rows-per-s", type=float, default=500.0)
    parser.add_argument("--fragment-rows", type=int, default=256)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    from mrag.store import schema
    from mrag.store.lance import Store
    from mrag.store.writer import LanceWriteStage

    tmp = None if args.out else tempfile.TemporaryDirectory(prefix="mrag-bench-scale-")
    db = args.out or str(Path(tmp.name) / "db")
    store = Store(db)
    store.ensure_tables({"clip": DIM, "text_vec": 384})
    # Warm-up (imports, first-call costs) in a scratch database, so that the smallest size is
    # not charged for them and the ratio is not flattered.
    scratch = db + "-warmup"
    Store(scratch).ensure_tables({"clip": DIM, "text_vec": 384})
    warm = LanceWriteStage(scratch)
    for i in range(3):
        warm(embedded_rows(10_000_000 + i * 1000, COMMIT_ROWS, seed=99 + i))
    writer = LanceWriteStage(db)
    next_object, rows_now, seed = 0, 0, 1
    per_size: dict[int, float] = {}
    print(f"{'chunks rows':>12} {'assets rows':>12} {'commit s/10k':>13} {'min':>7} {'max':>7} "
          f"{'forget 500 s':>13} {'fill s':>7}", flush=True)  # fmt: skip
    for size in sizes:
        started = time.perf_counter()
        if size > rows_now:
            next_object = fill(store, next_object, size - rows_now, seed)
            seed += 1
            rows_now = size
        fill_s = time.perf_counter() - started
        timings = []
        for _ in range(args.commits):
            rows = embedded_rows(next_object, COMMIT_ROWS, seed)
            seed += 1
            before = len(writer.commits)
            writer(rows)
            timings.append(sum(c.seconds for c in writer.commits[before:]))
            next_object += COMMIT_ROWS // CHUNKS_PER_OBJECT
            rows_now += COMMIT_ROWS
        per_size[size] = statistics.median(timings)
        # The planning step, with the indices current (as the end of every ingest leaves them).
        for name in (schema.CHUNKS, schema.ASSETS, schema.ERRORS):
            store.open(name).to_lance().optimize.optimize_indices()
        absent = [f"s3://bench/absent/{i}.txt" for i in range(500)]
        forget_started = time.perf_counter()
        store.forget(absent)
        forget_s = time.perf_counter() - forget_started
        print(f"{size:>12} {size // CHUNKS_PER_OBJECT:>12} "
              f"{per_size[size]:>13.4f} {min(timings):>7.4f} {max(timings):>7.4f} "
              f"{forget_s:>13.4f} {fill_s:>7.1f}", flush=True)  # fmt: skip
    cadence_report(db + "-long-job", args.job_hours, args.job_rows_per_s, args.fragment_rows)
    if tmp is not None:
        tmp.cleanup()
    print(f"commit_cost_growth={per_size[sizes[-1]] / per_size[sizes[0]]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
