"""Index job: full-text, scalar and vector indices on ``chunks`` (also ``mrag index --db URI``).

    python -m pipelines.index --db ./mrag-db

Runs at the end of every ingest too (``index.auto_after_ingest``). Below
``index.vector_min_rows`` vector search stays exact; above it the index type and its build
parameters follow the row count, and after each build the query settings (nprobes, refine
factor, ef) are raised until recall@10 against exact search reaches ``index.target_recall`` on a
sample of stored vectors (``mrag.store.index_tuning``). The settings chosen and the recall they
reached go to the table's configuration, where searches read them, and to the report (printed,
``--json``, and written to ``<db>/_runs/``). Builds and tuning steps are shown on stderr.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mrag import storage
from mrag.config import add_config_arguments, config_from_args
from mrag.errors import TableNotFoundError
from mrag.pipelines.command import run_command
from mrag.spaces import SPACES
from mrag.store import index_tuning, schema
from mrag.store.orphans import remove_orphan_files

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence

    from mrag.config import IndexConfig
    from mrag.store.lance import Store

log = logging.getLogger(__name__)

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
            shown = {k: v for k, v in info.items() if v is not None and k != "column"}
            lines.append(f"vector {column}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
            if info.get("target_met") is False:
                lines.append(
                    f"  warning: recall@10 {info['recall_at_10']} (less two standard errors: "
                    f"{info['recall_at_10_low']}) is below the target {info['target_recall']} "
                    f"+ margin {info['recall_margin']} at every query setting tried"
                )
        lines.append(f"done in {self.elapsed_s:.1f} s")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fts": self.fts,
            "scalar": self.scalar,
            "vector": self.vector,
            "elapsed_s": round(self.elapsed_s, 1),
        }


def choose_vector_index(n_rows: int, dim: int, config: IndexConfig) -> dict[str, Any] | None:
    """The first index to try (``None``: exact search), as build parameters."""
    ladder = index_tuning.index_ladder(n_rows, dim, config)
    if not ladder:
        return None
    first = ladder[0]
    choice: dict[str, Any] = {"index_type": first.index_type}
    choice["num_partitions"] = first.num_partitions
    if first.num_sub_vectors is not None:
        choice["num_sub_vectors"] = first.num_sub_vectors
    return choice


def build_indices(
    store: Store,
    config: IndexConfig,
    *,
    rebuild_vectors: bool = False,
    progress: Callable[[str], None] | None = None,
) -> IndexReport:
    """Creates missing indices and brings existing ones up to date with new rows.

    A vector index is built (and tuned) when a column has none, or with ``rebuild_vectors``;
    an existing one is re-tuned, not rebuilt, when it has no tuning record or its rows changed
    by more than ``config.retune_after_growth`` since it was tuned. ``progress`` receives one
    line per stage and per setting measured (default: the module's log).
    """
    started = time.perf_counter()
    say = progress or (lambda line: log.info("%s", line))
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
    say(f"full-text indices {report.fts} after {time.perf_counter() - started:.1f} s")
    for column, index_type in SCALAR_INDICES.items():
        if (column,) not in by_column:
            table.create_scalar_index(column, index_type=index_type)
        report.scalar.append(f"{column} ({index_type})")
    say(f"scalar indices ready after {time.perf_counter() - started:.1f} s")

    records = index_tuning.stored_tunings(table.to_lance())
    for column in (c for c in SPACES if c in table.schema.names):
        n_rows = table.count_rows(f"{column} IS NOT NULL")
        dim = table.schema.field(column).type.list_size
        existing_index = by_column.get((column,))
        if existing_index is not None and not rebuild_vectors:
            report.vector[column] = _update_vector_index(
                table, column, existing_index, records.get(column), n_rows, config, progress
            )
            continue
        record = index_tuning.build_tuned_index(
            table, column, rows=n_rows, dim=dim, config=config, progress=progress
        )
        if record is None:
            if existing_index is not None:  # --rebuild of a table now below the threshold
                table.drop_index(existing_index.name)
            report.vector[column] = {"rows": n_rows, "search": "exact (below vector_min_rows)"}
            continue
        report.vector[column] = {"status": "built", **record.to_dict()}
    report.elapsed_s = time.perf_counter() - started
    return report


def _update_vector_index(
    table: Any,
    column: str,
    index: Any,
    record: index_tuning.TunedIndex | None,
    n_rows: int,
    config: IndexConfig,
    progress: Callable[[str], None] | None,
) -> dict[str, Any]:
    """An existing index (``optimize`` already folded new rows in): its stored tuning, or a new
    one when it has none or the rows changed by more than ``retune_after_growth``."""
    spec = index_tuning.spec_of(table, index, record)
    if spec is None:  # an index type mrag does not build: searched with LanceDB's defaults
        return {"rows": n_rows, "index": index.index_type, "status": "updated (not tuned)"}
    if (
        record is not None
        and record.index_type == spec.index_type
        and abs(n_rows - record.rows) <= config.retune_after_growth * max(1, record.rows)
    ):
        return {"status": "updated", **record.to_dict(), "rows": n_rows, "tuned_rows": record.rows}
    sample = index_tuning.recall_sample(
        table, column, rows=n_rows, config=config, progress=progress
    )
    retuned = index_tuning.tune_index(
        table, column, spec, sample, rows=n_rows, config=config, build_s=None, progress=progress
    )
    return {"status": "updated, re-tuned", **retuned.to_dict()}


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
        # Lance's clean-up misses files abandoned after the oldest kept version (killed or
        # retried fragment writers): those go here, once older than the kept versions.
        orphans = remove_orphan_files(store, name, keep_versions_for.total_seconds())
        report.tables[name] = {
            "fragments_removed": compacted.fragments_removed,
            "fragments_added": compacted.fragments_added,
            "old_versions_removed": cleaned.old_versions,
            "bytes_removed": cleaned.bytes_removed + orphans.bytes,
            "orphan_files_removed": orphans.files,
        }
    report.elapsed_s = time.perf_counter() - started
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--rebuild", action="store_true", help="retrain vector indices")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON document")
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
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    report = build_indices(store, config.index, rebuild_vectors=args.rebuild, progress=_to_stderr)
    maintenance = None
    if args.maintain:
        maintenance = maintain(store, keep_versions_for=timedelta(hours=args.keep_versions_hours))
    document = {
        "run_id": uuid.uuid4().hex[:12],
        "job": "index",
        "started_at": started_at,
        "db_uri": config.db_uri,
        "index": report.to_dict(),
        "maintenance": None if maintenance is None else maintenance.tables,
    }
    document["report_uri"] = write_index_report(config.db_uri, document)
    if args.json:
        print(json.dumps(document))
    else:
        print(report.render())
        if maintenance is not None:
            print(maintenance.render())
    return 0


def _to_stderr(line: str) -> None:
    print(f"[index {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def write_index_report(db_uri: str, report: dict[str, Any]) -> str:
    """Writes the run's JSON report beside the tables (``<db>/_runs/<time>-index-<run id>.json``,
    next to the ingest reports); returns its URI."""
    fs, root = storage.filesystem(db_uri)
    stamp = report["started_at"].replace(":", "").replace("-", "")
    name = f"{stamp}-index-{report['run_id']}.json"
    path = f"{root.rstrip('/')}/_runs/{name}"
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w") as out:
        json.dump(report, out, indent=2)
    return f"{db_uri.rstrip('/')}/_runs/{name}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.index``: the same flags as ``mrag index``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipelines.index", description=__doc__)
    add_arguments(parser)
    return run_command(command, parser.parse_args(argv))
