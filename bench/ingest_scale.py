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


def _vectors(n: int, seed: int):
    import numpy as np
    import pyarrow as pa

    values = np.random.default_rng(seed).standard_normal(n * DIM, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values), DIM)


def embedded_rows(first_object: int, n_rows: int, seed: int):
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
            "modality": ["text"] * n,
            "text": ["river mountain bread engine violin harbor lantern orchard"] * n,
            "title": pa.nulls(n, pa.string()),
            "error_stage": [""] * n,
            "error_class": [""] * n,
            "error_message": [""] * n,
            "clip": _vectors(n, seed),
            "clip_model": ["bench"] * n,
        }
    )


def fill(store, first_object: int, n_rows: int, seed: int) -> int:
    """Grows the tables by ``n_rows`` chunks (whole objects) in large appends, unmeasured."""
    from mrag.store import schema
    from mrag.store.writer import _conform

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,250000,500000,1000000,2000000")
    parser.add_argument("--commits", type=int, default=7, help="10k-row commits per size")
    parser.add_argument("--out", help="database folder (default: a temp dir, removed after)")
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
    if tmp is not None:
        tmp.cleanup()
    print(f"commit_cost_growth={per_size[sizes[-1]] / per_size[sizes[0]]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
