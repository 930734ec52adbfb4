"""The ``mrag`` command: ingest, search, serve, demo.

Results go to stdout (``--json`` prints exactly one JSON document); diagnostics go to stderr.
This is the one module in ``mrag/`` that reaches into ``pipelines/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrag.config import load_config, parse_overrides
from mrag.errors import MragError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mrag.config import MragConfig


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="LanceDB URI: folder or s3://… (default: config, ./mrag-db)")
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--profile", choices=["default", "offline"])
    parser.add_argument("--clip-weights", help="local path or s3:// prefix of CLIP weights")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")


def _config(args: argparse.Namespace, **extra: Any) -> MragConfig:
    overrides: dict[str, Any] = {"db_uri": args.db, "clip_weights": args.clip_weights, **extra}
    overrides.update(parse_overrides(args.set))
    return load_config(args.config, profile=args.profile, overrides=overrides)


def cmd_ingest(args: argparse.Namespace) -> int:
    from pipelines.ingest import run_ingest

    summary = run_ingest(_config(args, ray_address=args.address), args.sources)
    print(json.dumps(summary.to_dict()) if args.json else summary.render())
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from mrag.query import QueryEngine

    config = _config(args)
    image = Path(args.image).read_bytes() if args.image else None
    filters = {}
    if args.modality:
        filters["modality"] = args.modality
    if args.uri_prefix:
        filters["uri_prefix"] = args.uri_prefix
    if args.page is not None:
        filters["page"] = args.page
    engine = QueryEngine.for_config(config)
    hits = engine.search(args.text, image=image, k=args.k, filters=filters, mode=args.mode)
    if args.json:
        print(json.dumps({"hits": [hit.to_dict() for hit in hits]}))
    else:
        for rank, hit in enumerate(hits, 1):
            where = f"  p.{hit.page}" if hit.page else ""
            print(f"{rank:>3}  {hit.score:+.4f}  {hit.modality:<8} {hit.uri}{where}")
        if not hits:
            print("no hits", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from mrag.serve.app import run_server

    config = _config(args, ray_address=args.address)
    config.serve.host = args.host or config.serve.host
    config.serve.port = args.port or config.serve.port
    run_server(config, blocking=True)
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from mrag.store.lance import Store
    from pipelines.index import build_indices

    config = _config(args)
    report = build_indices(Store(config.db_uri), config.index, rebuild_vectors=args.rebuild)
    print(report.render())
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from mrag.eval import evaluate, load_qrels, load_queries
    from mrag.query import QueryEngine

    config = _config(args)
    modes = tuple(args.modes.split(",")) if args.modes else ("vector", "fts", "hybrid")
    report = evaluate(
        QueryEngine.for_config(config), load_queries(args.queries), load_qrels(args.qrels), modes
    )
    print(json.dumps({"n_queries": report.n_queries, "metrics": report.metrics}) if args.json
          else report.render())  # fmt: skip
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    run_demo(Path(args.dir), profile=args.profile or "offline", clip_weights=args.clip_weights)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrag", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="ingest media from folders or s3:// prefixes")
    ingest.add_argument("sources", nargs="+")
    _common(ingest)
    ingest.add_argument("--address", help="Ray cluster address (default: local Ray)")
    ingest.add_argument("--json", action="store_true")
    ingest.set_defaults(run=cmd_ingest)

    search = sub.add_parser("search", help="search by text or by an image file")
    search.add_argument("text", nargs="?")
    search.add_argument("--image", help="path of a query image")
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--modality", action="append", help="restrict to a modality (repeatable)")
    search.add_argument("--uri-prefix", help="restrict to objects under this URI prefix")
    search.add_argument("--page", type=int, help="restrict to one PDF page (1-based)")
    search.add_argument(
        "--mode", choices=["vector", "fts", "hybrid"], default="hybrid", help="default: hybrid"
    )
    search.add_argument("--json", action="store_true")
    _common(search)
    search.set_defaults(run=cmd_search)

    serve = sub.add_parser("serve", help="start the HTTP API on Ray Serve")
    _common(serve)
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--address", help="Ray cluster address (default: local Ray)")
    serve.set_defaults(run=cmd_serve)

    index = sub.add_parser("index", help="build or update full-text, scalar and vector indices")
    _common(index)
    index.add_argument("--rebuild", action="store_true", help="retrain vector indices")
    index.set_defaults(run=cmd_index)

    evaluation = sub.add_parser("eval", help="recall@k, nDCG@10, MRR per mode on BEIR files")
    _common(evaluation)
    evaluation.add_argument("--queries", required=True, help="queries.jsonl (_id, text)")
    evaluation.add_argument("--qrels", required=True, help="qrels TSV: query-id corpus-id score")
    evaluation.add_argument("--modes", help="comma-separated subset of vector,fts,hybrid")
    evaluation.add_argument("--json", action="store_true")
    evaluation.set_defaults(run=cmd_eval)

    demo = sub.add_parser("demo", help="build a sample corpus, ingest it, search it")
    demo.add_argument("--dir", default="mrag-demo", help="where the corpus and database go")
    demo.add_argument("--profile", choices=["default", "offline"])
    demo.add_argument("--clip-weights", help="local path or s3:// prefix of CLIP weights")
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.run(args)
    except (MragError, FileNotFoundError, LookupError) as exc:
        print(f"mrag {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
