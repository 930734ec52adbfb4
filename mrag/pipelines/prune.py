"""Prune job: remove the rows of objects gone from their source (``mrag prune``).

    mrag prune --db ./mrag-db s3://bucket/images/ ./local/docs
    python -m mrag.pipelines.prune --db ./mrag-db s3://bucket/images/

Only objects under the listed sources are considered: a database fed from several prefixes
keeps the rows of the prefixes not named. ``mrag ingest --sync`` does the same before ingesting.
A source that does not exist is an error (``SourceNotFoundError``), never "everything is gone".
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from mrag import storage
from mrag.config import add_config_arguments, config_from_args
from mrag.pipelines.command import run_command
from mrag.store import schema

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable, Sequence

    import pyarrow as pa

    from mrag.config import MragConfig
    from mrag.store.lance import Store


@dataclass
class PruneReport:
    objects: int = 0  # gone objects whose rows were removed
    rows: int = 0  # rows deleted over the three tables

    def render(self) -> str:
        return f"removed {self.rows} rows of {self.objects} objects gone from the sources"


def source_prefixes(sources: Iterable[str]) -> list[str]:
    """The uri forms of the sources, as prefixes (local folders made absolute)."""
    prefixes = []
    for source in sources:
        if "://" in source:
            prefixes.append(source)
        else:
            prefixes.append(os.path.abspath(source))
    return prefixes


def _under(uri: str, prefixes: Sequence[str]) -> bool:
    path = storage.local_path(uri)  # a file:// uri (a name that is not UTF-8) by its real path
    return any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)


def prune_gone(
    store: Store, sources: Sequence[str], listed_uris: Iterable[str] | pa.ChunkedArray
) -> PruneReport:
    """Deletes every row (assets, chunks, errors) of objects under ``sources`` that are not in
    ``listed_uris``, including the chunks a killed run left for an object without an assets row.
    Reads the ``uri`` columns only."""
    import pyarrow as pa
    import pyarrow.compute as pc

    prefixes = source_prefixes(sources)
    if isinstance(listed_uris, pa.ChunkedArray | pa.Array):
        listed = listed_uris
    else:
        listed = pa.array(list(dict.fromkeys(listed_uris)), pa.string())
    stored: set[str] = set()
    for name in (schema.ASSETS, schema.CHUNKS, schema.ERRORS):
        table = store.open(name)
        if table is None:
            continue
        uris = pc.unique(table.to_lance().to_table(columns=["uri"])["uri"])
        gone = uris.filter(pc.invert(pc.is_in(uris, listed)))
        stored.update(u for u in gone.to_pylist() if _under(u, prefixes))
    report = PruneReport(objects=len(stored))
    if stored:
        report.rows = store.forget(sorted(stored))
    return report


def run_prune(config: MragConfig, sources: Sequence[str]) -> PruneReport:
    """Lists ``sources`` and removes the rows of the objects no longer there. Safe beside
    readers; run it while no ingest writes to the same database."""
    from mrag.store.lance import Store

    store = Store(config.db_uri)
    listed = [o.uri for o in storage.list_objects(sources, config.ingest.extensions)]
    return prune_gone(store, sources, listed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", help="folders, files or s3:// prefixes")
    add_config_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON document")


def command(args: argparse.Namespace) -> int:
    report = run_prune(config_from_args(args), args.sources)
    print(json.dumps(asdict(report)) if args.json else report.render())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mrag.pipelines.prune``: the same flags as ``mrag prune``."""
    import argparse

    parser = argparse.ArgumentParser(prog="mrag prune", description=__doc__)
    add_arguments(parser)
    return run_command(command, parser.parse_args(argv))


if __name__ == "__main__":
    import sys

    sys.exit(main())
