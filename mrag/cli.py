"""The ``mrag`` command: ingest, search, serve, demo.

Results go to stdout (``--json`` prints exactly one JSON document); diagnostics go to stderr.
The jobs (ingest, index, demo) bring their own flags from :mod:`mrag.pipelines`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mrag.config import add_config_arguments, config_from_args
from mrag.errors import MragError
from mrag.locators import format_time_range, parse_time_range
from mrag.pipelines import demo as demo_job
from mrag.pipelines import index as index_job
from mrag.pipelines import ingest as ingest_job
from mrag.pipelines import prune as prune_job
from mrag.pipelines.command import run_command

if TYPE_CHECKING:
    from collections.abc import Sequence


def cmd_search(args: argparse.Namespace) -> int:
    from mrag.query import QueryEngine

    config = config_from_args(args)
    try:
        image = Path(args.image).read_bytes() if args.image else None
    except OSError as exc:
        raise MragError(f"cannot read the query image: {exc}") from None
    filters = _filters(args)
    engine = QueryEngine.for_config(config)
    hits = engine.search(
        args.text, image=image, k=args.k, filters=filters, mode=args.mode, rerank=args.rerank,
        group=args.group, fusion=args.fusion, weights=_weights(args.weight),
    )  # fmt: skip
    if args.json:
        print(json.dumps({"hits": [hit.to_dict() for hit in hits]}))
    else:
        for rank, hit in enumerate(hits, 1):
            where = f"  p.{hit.page}" if hit.page else ""
            if hit.start_s is not None and hit.end_s is not None:
                where = f"  {format_time_range(hit.start_s, hit.end_s)}"
            print(f"{rank:>3}  {hit.score:+.4f}  {hit.modality:<8} {hit.uri}{where}")
        if not hits:
            print("no hits", file=sys.stderr)
    return 0


def _weights(items: list[str] | None) -> dict[str, float] | None:
    """``["bm25=2", "clip_text=0"]`` → ``{"bm25": 2.0, "clip_text": 0.0}``."""
    if not items:
        return None
    weights = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise MragError(f"--weight {item!r}: expected LIST=NUMBER, e.g. bm25=2")
    return weights


def _add_ranking_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rerank",
        action=argparse.BooleanOptionalAction,
        help="rerank a deeper candidate pool (default: rerank.enabled)",
    )
    parser.add_argument("--group", choices=["asset"], help="asset: one hit per asset")


def cmd_ask(args: argparse.Namespace) -> int:
    """Search → refine → generate: the answer with ``[n]`` citations, then the cited sources."""
    from mrag.answers import answer_events, engine_generator
    from mrag.query import QueryEngine, validate_request

    extra = {"generate.generator": args.generator} if args.generator else {}
    config = config_from_args(args, **extra)
    try:
        image = Path(args.image).read_bytes() if args.image else None
    except OSError as exc:
        raise MragError(f"cannot read the query image: {exc}") from None
    engine = QueryEngine.for_config(config)
    request = validate_request(
        {
            "query": args.question,
            "image": image,
            "k": args.k or config.generate.k,
            "filters": _filters(args),
        },
        config.serve.max_k,
    )
    result = None
    for event in answer_events(engine, request, engine_generator(engine)):
        if event["type"] == "delta":
            if args.stream and not args.json:
                print(event["text"], end="", flush=True)
        elif event["type"] == "done":
            result = event["result"]
    if args.json:
        print(json.dumps(result.to_dict()))
        return 0
    if not args.stream:
        print(result.answer, end="")
    print("\n\nSources:")
    cited = {c.n for c in result.citations}
    for item in result.evidence:
        if item.n in cited:
            print(f"  {item.citation()}")
    if result.dropped_citations:
        print(f"({result.dropped_citations} citations pointed at no source and were dropped)")
    return 0


def _filters(args: argparse.Namespace) -> dict:
    filters = {}
    if args.modality:
        filters["modality"] = args.modality
    if args.uri_prefix:
        filters["uri_prefix"] = args.uri_prefix
    if args.page is not None:
        filters["page"] = args.page
    if args.time:
        filters["time_range"] = list(parse_time_range(args.time))
    return filters


#: Set in the child process that ``mrag serve`` runs the server in.
_SERVE_SUPERVISED_ENV = "MRAG_SERVE_SUPERVISED"


def cmd_serve(args: argparse.Namespace) -> int:
    """Serves until SIGTERM or Ctrl-C; then drains, shuts down and says so in one line."""
    if os.name == "posix" and os.environ.get(_SERVE_SUPERVISED_ENV) != "1":
        return _supervise_serve(args.argv)
    from mrag.serve.runner import serve_until_stopped

    config = config_from_args(
        args, ray_address=args.address, **{"serve.host": args.host, "serve.port": args.port}
    )
    stopped = serve_until_stopped(config)
    print(stopped.render(), flush=True)
    return 0


def _supervise_serve(argv: list[str]) -> int:
    """Runs the server in a child process of a session of its own and forwards SIGTERM,
    SIGINT and SIGHUP to it. A signal to this process's whole group (systemd's default
    ``KillMode``, a terminal's Ctrl-C, ``kill -- -PGID``) then reaches only mrag's drain, never
    Ray's own processes, which would stop at once and cut off the requests in flight."""
    import signal
    import subprocess

    env = {**os.environ, _SERVE_SUPERVISED_ENV: "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "mrag.cli", *argv], env=env, start_new_session=True
    )

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        if signal.getsignal(signum) != signal.SIG_IGN:  # ignored from the start: the child too
            signal.signal(signum, forward)
    return child.wait()


def cmd_eval(args: argparse.Namespace) -> int:
    from mrag.eval import evaluate, load_qrels, load_queries
    from mrag.query import QueryEngine
    from mrag.retrieve.fusion import FUSION_METHODS as FUSIONS
    from mrag.retrieve.search import MODES

    config = config_from_args(args)
    modes = tuple(args.modes.split(",")) if args.modes else None
    fusions = tuple(args.fusion.split(",")) if args.fusion else None
    allowed_modes = (*MODES, *(f"{m}+rerank" for m in MODES))
    for name, given, allowed in (
        ("modes", modes or (), allowed_modes),
        ("fusion", fusions or (), FUSIONS),
    ):
        wrong = [g for g in given if g not in allowed]
        if wrong:
            raise MragError(f"--{name}: {wrong[0]!r} is not one of {', '.join(allowed)}")
    report = evaluate(
        QueryEngine.for_config(config), load_queries(args.queries), load_qrels(args.qrels),
        modes, fusions, group=args.group, depth=args.depth,
    )  # fmt: skip
    summary = {"n_queries": report.n_queries, "depth": report.depth, "metrics": report.metrics}
    print(json.dumps(summary) if args.json else report.render())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrag", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="ingest media from folders or s3:// prefixes")
    ingest_job.add_arguments(ingest)
    ingest.set_defaults(run=ingest_job.command)

    search = sub.add_parser("search", help="search by text or by an image file")
    search.add_argument("text", nargs="?")
    search.add_argument("--image", help="path of a query image")
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--modality", action="append", help="restrict to a modality (repeatable)")
    search.add_argument("--uri-prefix", help="restrict to objects under this URI prefix")
    search.add_argument("--page", type=int, help="restrict to one PDF page (1-based)")
    search.add_argument(
        "--time", metavar="START-END", help="restrict to audio/video overlapping, e.g. 1:00-2:30"
    )
    search.add_argument(
        "--mode", choices=["vector", "fts", "hybrid"], default="hybrid", help="default: hybrid"
    )
    search.add_argument("--fusion", choices=["rrf", "score"], help="default: retrieval.fusion")
    search.add_argument(
        "--weight", action="append", metavar="LIST=W", help="fusion weight of a list (repeatable)"
    )
    _add_ranking_arguments(search)
    search.add_argument("--json", action="store_true")
    add_config_arguments(search)
    search.set_defaults(run=cmd_search)

    ask = sub.add_parser("ask", help="answer a question from the corpus, with cited sources")
    ask.add_argument("question", nargs="?")
    ask.add_argument("--image", help="path of a query image")
    ask.add_argument("-k", type=int, help="hits to draw the evidence from (generate.k)")
    ask.add_argument("--modality", action="append", help="restrict to a modality (repeatable)")
    ask.add_argument("--uri-prefix", help="restrict to objects under this URI prefix")
    ask.add_argument("--page", type=int, help="restrict to one PDF page (1-based)")
    ask.add_argument(
        "--time", metavar="START-END", help="restrict to audio/video overlapping, e.g. 1:00-2:30"
    )
    ask.add_argument(
        "--generator",
        help="generate.generator: extractive (no model), transformers, openai "
        "(OPENAI_BASE_URL), or a causal LM spec",
    )
    ask.add_argument("--stream", action="store_true", help="print the answer as it is written")
    ask.add_argument("--json", action="store_true")
    add_config_arguments(ask)
    ask.set_defaults(run=cmd_ask)

    serve = sub.add_parser(
        "serve",
        help="start the HTTP API on Ray Serve (SIGTERM or Ctrl-C stops it cleanly)",
        description="Serves until SIGTERM or Ctrl-C, then lets requests in flight finish "
        "(serve.shutdown_grace_s) and shuts Serve and its Ray down. Binds 127.0.0.1 by default; "
        "any other address needs MRAG_API_TOKEN.",
    )
    add_config_arguments(serve)
    serve.add_argument("--host", help="serve.host (default 127.0.0.1; others need MRAG_API_TOKEN)")
    serve.add_argument("--port", type=int, help="serve.port (default 8000)")
    serve.add_argument("--address", help="Ray cluster address (default: local Ray)")
    serve.set_defaults(run=cmd_serve)

    index = sub.add_parser("index", help="build or update full-text, scalar and vector indices")
    index_job.add_arguments(index)
    index.set_defaults(run=index_job.command)

    prune = sub.add_parser("prune", help="remove the rows of objects gone from the sources")
    prune_job.add_arguments(prune)
    prune.set_defaults(run=prune_job.command)

    evaluation = sub.add_parser("eval", help="recall@k, nDCG@10, MRR per mode on BEIR files")
    add_config_arguments(evaluation)
    evaluation.add_argument("--queries", required=True, help="queries.jsonl (_id, text)")
    evaluation.add_argument("--qrels", required=True, help="qrels TSV: query-id corpus-id score")
    evaluation.add_argument(
        "--modes",
        help="comma-separated: vector, fts, hybrid, each optionally +rerank (default: all three,"
        " and hybrid+rerank when a reranker is configured)",
    )
    evaluation.add_argument(
        "--fusion", help="comma-separated fusions to score (default: rrf,score, configured first)"
    )
    evaluation.add_argument("--group", choices=["asset"], help="asset: one hit per asset")
    evaluation.add_argument(
        "--depth",
        type=int,
        default=100,
        help="chunks retrieved per query; each document ranks where its best chunk does"
        " (BEIR's MaxP). 10: the older chunk-level cut, where one page's chunks crowd others out",
    )
    evaluation.add_argument("--json", action="store_true")
    evaluation.set_defaults(run=cmd_eval)

    demo = sub.add_parser("demo", help="build a sample corpus, ingest it, search it")
    demo_job.add_arguments(demo)
    demo.set_defaults(run=demo_job.command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return run_command(args.run, args)


if __name__ == "__main__":
    sys.exit(main())
