"""Index job: full-text, scalar and vector indices on ``chunks`` (also ``mrag index --db URI``).

    python -m pipelines.index --db ./mrag-db

Runs at the end of every ingest too (``index.auto_after_ingest``). Vector index type and partition
count follow the row count; below ``index.vector_min_rows`` search stays exact. After a vector
index is built, recall@10 against exact search is measured on a sample of stored vectors and
reported, because default query settings can be far from what they promise.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from mrag.config import add_config_arguments, config_from_args
from mrag.errors import TableNotFoundError
from mrag.pipelines.command import run_command
from mrag.spaces import SPACES
from mrag.store import schema

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from mrag.config import IndexConfig
    from mrag.store.lance import Store

SCALAR_INDICES = {"modality": "BITMAP", "uri": "BTREE", "asset_id": "BTREE", "page": "BTREE"}


@dataclass
class IndexReport:
    fts: str = ""
    scalar: list[str] = field(default_factory=list)
    vector: dict[str, dict[str, Any]] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def render(self) -> str:
        lines = [
            f"full-text index on text: {self.fts}",
            f"scalar indices: {', '.join(self.scalar)}",
        ]
        for column, info in self.vector.items():
            lines.append(f"vector {column}: " + ", ".join(f"{k}={v}" for k, v in info.items()))
        lines.append(f"done in {self.elapsed_s:.1f} s")
        return "\n".join(lines)


def choose_vector_index(n_rows: int, dim: int, config: IndexConfig) -> dict[str, Any] | None:
    """None (exact search) for small tables; IVF_HNSW_SQ up to ``pq_min_rows``; IVF_PQ beyond."""
    if n_rows < config.vector_min_rows:
        return None
    partitions = max(1, n_rows // config.rows_per_partition)
    if n_rows < config.pq_min_rows:
        return {"index_type": "IVF_HNSW_SQ", "num_partitions": min(partitions, 4096)}
    return {
        "index_type": "IVF_PQ",
        "num_partitions": int(math.sqrt(n_rows)),
        "num_sub_vectors": max(1, dim // 8),
    }


def build_indices(
    store: Store, config: IndexConfig, *, rebuild_vectors: bool = False
) -> IndexReport:
    """Creates missing indices and brings existing ones up to date with new rows."""
    started = time.perf_counter()
    report = IndexReport()
    table = store.open(schema.CHUNKS)
    if table is None:
        raise TableNotFoundError(f"{store.db_uri} has no chunks table; run `mrag ingest` first")
    existing = {i.name: i for i in table.list_indices()}
    by_column = {tuple(i.columns): i for i in existing.values()}

    if ("text",) in by_column:
        table.optimize()  # folds new rows into every existing index
        report.fts = "updated"
    else:
        table.create_fts_index("text", replace=True, with_position=True)
        report.fts = "created"
    if (
        "context" in table.schema.names
        and ("context",) not in by_column
        and table.count_rows("context IS NOT NULL AND context != ''") > 0
    ):
        # Titles and section headings: a question naming a section's topic (retrieval's
        # fts_context_boost weighs it). No positions: phrase queries run on the text. Not
        # while no row has one (PDF pages, images): each full-text query would pay for it.
        table.create_fts_index("context", replace=True, with_position=False)
        report.fts += " (+ context)"
    for column, index_type in SCALAR_INDICES.items():
        if (column,) not in by_column:
            table.create_scalar_index(column, index_type=index_type)
        report.scalar.append(f"{column} ({index_type})")

    for column in (c for c in SPACES if c in table.schema.names):
        n_rows = table.count_rows(f"{column} IS NOT NULL")
        dim = table.schema.field(column).type.list_size
        choice = choose_vector_index(n_rows, dim, config)
        if choice is None:
            report.vector[column] = {"rows": n_rows, "search": "exact (below vector_min_rows)"}
            continue
        if (column,) in by_column and not rebuild_vectors:
            report.vector[column] = {"rows": n_rows, "index": by_column[(column,)].index_type,
                                     "status": "updated"}  # fmt: skip
            continue
        table.create_index(metric="cosine", vector_column_name=column, replace=True, **choice)
        recall = measure_recall(table, column, sample=config.recall_sample)
        report.vector[column] = {"rows": n_rows, **choice, "recall_at_10": round(recall, 3)}
    report.elapsed_s = time.perf_counter() - started
    return report


@dataclass
class MaintenanceReport:
    """What :func:`maintain` did per table."""

    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def render(self) -> str:
        lines = [
            f"{name}: " + ", ".join(f"{k}={v}" for k, v in info.items())
            for name, info in self.tables.items()
        ]
        return "\n".join([*lines, f"maintenance done in {self.elapsed_s:.1f} s"])


def maintain(
    store: Store, *, keep_versions_for: timedelta = timedelta(hours=1)
) -> MaintenanceReport:
    """Compacts every table, folds new rows into its indices and removes old versions and the
    data files no version references (what a killed job leaves behind).

    Only safe while no job writes to the database: an unreferenced file may be one a running
    writer has not committed yet (Lance cannot tell the two apart). Versions newer than
    ``keep_versions_for`` stay, so readers still on one are not cut off.
    """
    started = time.perf_counter()
    report = MaintenanceReport()
    for name in store.table_names():
        dataset = store.open(name).to_lance()
        compacted = dataset.optimize.compact_files()
        dataset = store.open(name).to_lance()
        dataset.optimize.optimize_indices()
        cleaned = (
            store.open(name)
            .to_lance()
            .cleanup_old_versions(older_than=keep_versions_for, delete_unverified=True)
        )
        report.tables[name] = {
            "fragments_removed": compacted.fragments_removed,
            "fragments_added": compacted.fragments_added,
            "old_versions_removed": cleaned.old_versions,
            "bytes_removed": cleaned.bytes_removed,
        }
    report.elapsed_s = time.perf_counter() - started
    return report


def measure_recall(table: Any, column: str, *, sample: int, k: int = 10) -> float:
    """Mean recall@k of the indexed search (as the retriever runs it) against exact search.

    Raises:
        ValueError: ``sample`` is below 1.
        RuntimeError: the column holds no vectors to sample; a recall of 1.0 would then be
            reported for a figure that was never measured.
    """
    from mrag.retrieve.search import Retriever

    if sample < 1:
        raise ValueError(f"recall sample must be >= 1, got {sample}")
    settings = Retriever._index_settings(table, column)
    if settings is None:
        raise RuntimeError(f"no query settings known for the index on {column}")
    vectors = (
        table.search()
        .where(f"{column} IS NOT NULL")
        .select([column])
        .limit(sample)
        .to_arrow()[column]
        .to_pylist()
    )
    if not vectors:
        raise RuntimeError(f"no {column} vectors to measure recall on")
    recalls = []
    for vector in vectors:
        query = np.asarray(vector, dtype=np.float32)

        def ids(q: Any) -> set[str]:
            rows = q.select(["chunk_id", "_distance"]).limit(k).to_arrow()
            return set(rows["chunk_id"].to_pylist())

        base = table.search(query, vector_column_name=column).distance_type("cosine")
        exact = ids(base.bypass_vector_index())
        base = table.search(query, vector_column_name=column).distance_type("cosine")
        approx = ids(base.nprobes(settings[0]).refine_factor(settings[1]))
        recalls.append(len(exact & approx) / max(1, len(exact)))
    return float(np.mean(recalls))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--rebuild", action="store_true", help="retrain vector indices")
    parser.add_argument(
        "--maintain",
        action="store_true",
        help="also compact, optimise indices and remove old versions and orphan files "
        "(run it while no ingest writes)",
    )
    parser.add_argument(
        "--keep-versions-hours",
        type=float,
        default=1.0,
        help="with --maintain: keep versions newer than this (default 1)",
    )


def command(args: argparse.Namespace) -> int:
    from mrag.store.lance import Store

    config = config_from_args(args)
    store = Store(config.db_uri)
    print(build_indices(store, config.index, rebuild_vectors=args.rebuild).render())
    if args.maintain:
        kept = timedelta(hours=args.keep_versions_hours)
        print(maintain(store, keep_versions_for=kept).render())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.index``: the same flags as ``mrag index``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipelines.index", description=__doc__)
    add_arguments(parser)
    return run_command(command, parser.parse_args(argv))
