"""Load on the Serve application: requests/s and latency at several concurrency levels, or a
soak that watches each deployment's memory.

    .venv/bin/python bench/serve_load.py [--clients 8,32,128] [--seconds 20] [--path /v1/search]
    .venv/bin/python bench/serve_load.py --soak 600 [--warmup 60] [--clients 4]

Ingests ``mrag demo``'s sample corpus (24 images, 3 short documents, 1 corrupt file) with the
offline profile, starts ``mrag serve`` on 127.0.0.1 (every deployment at its config defaults),
and for each level runs that many concurrent clients (one asyncio task each, one connection
each) sending text queries back to back for ``--seconds``. Per level it prints requests/s,
p50/p99 of the answered requests, how many were refused (503, and how fast) and how many timed
out (the client gives up after ``--timeout`` s). Last line::

    requests_per_s=<level>:<req/s>,...

``--soak SECONDS`` holds a moderate load instead (``--clients``, default 4, each cycling through
searches that rerank and answers, so every deployment works), first for ``--warmup`` seconds,
then for SECONDS. It prints the resident memory (RSS) of every replica of every deployment at
the start and at the end of the soak (replicas found in the GCS's actor table by their
``ServeReplica:<app>:<deployment>`` class, RSS read with psutil) and ends with::

    rss_growth=<the largest end/start over the replicas>

(target: at most 1.05 over 10 minutes after warm-up).

Label the figures with the machine's load: other work on the cores moves every number.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable

QUERIES = [
    "what are Saturn's rings made of?", "how long does the dough rise?", "a red circle",
    "encrypt a file for someone else", "blue stripes", "bake bread in a covered pot",
    "green triangle", "decrypt a file with gpg",
]  # fmt: skip


async def level(
    url: str,
    clients: int,
    seconds: float,
    timeout: float,
    request_for: Callable[[int], tuple[str, dict]],
    headers: dict[str, str] | None = None,
) -> dict:
    """``clients`` concurrent clients, each sending ``request_for(i)`` (path, JSON body) for
    i = its number, its number + 1, ... back to back for ``seconds``."""
    import httpx

    latencies: list[float] = []
    refused: list[float] = []
    timeouts = errors = 0
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        nonlocal timeouts, errors
        async with httpx.AsyncClient(base_url=url, timeout=timeout, headers=headers) as http:
            i = n
            while time.perf_counter() < deadline:
                path, body = request_for(i)
                i += 1
                started = time.perf_counter()
                try:
                    response = await http.post(path, json=body)
                except httpx.TimeoutException:
                    timeouts += 1
                    continue
                took = time.perf_counter() - started
                if response.status_code == 200:
                    latencies.append(took)
                elif response.status_code == 503:
                    refused.append(took)
                    await asyncio.sleep(0.05)  # a client that backs off a little
                else:
                    errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies or [0.0]) * 1000
    return {
        "clients": clients,
        "rps": len(latencies) / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "answered": len(latencies),
        "refused": len(refused),
        "refused_fast": sum(t <= 0.1 for t in refused),
        "refused_p50": float(np.percentile(np.asarray(refused) * 1000, 50)) if refused else 0.0,
        "timeouts": timeouts,
        "errors": errors,
    }


def soak_request(i: int) -> tuple[str, dict]:
    """Every third request an answer (the Generator), the others searches that rerank (the
    QueryEncoder, Retriever and Reranker)."""
    query = QUERIES[i % len(QUERIES)]
    if i % 3 == 2:
        return "/v1/answer", {"query": query, "k": 5}
    return "/v1/search", {"query": query, "k": 5, "rerank": True}


def replica_processes(app: str) -> dict[str, list[int]]:
    """``{deployment: [pid, ...]}`` of the application's live replicas.

    Read from the GCS's actor table (``ray._private.state.actors``): ``ray.util.state`` would
    do the same through the dashboard, which a local mrag Ray does not start.
    """
    from ray._private import state

    prefix = f"ServeReplica:{app}:"
    found: dict[str, list[int]] = {}
    for actor in state.actors().values():
        name = actor.get("ActorClassName", "")
        if actor.get("State") == "ALIVE" and name.startswith(prefix) and actor.get("Pid"):
            found.setdefault(name.removeprefix(prefix), []).append(int(actor["Pid"]))
    return {deployment: sorted(pids) for deployment, pids in sorted(found.items())}


def rss_bytes(pids: dict[str, list[int]]) -> dict[tuple[str, int], int]:
    import psutil

    return {
        (deployment, pid): psutil.Process(pid).memory_info().rss
        for deployment, replica_pids in pids.items()
        for pid in replica_pids
    }


def soak(url: str, args: argparse.Namespace, app: str) -> float:
    """Warm-up, RSS, the soak, RSS again; prints both and returns the largest growth."""
    clients = int(args.clients or 4)
    print(f"soak: {clients} clients, {args.warmup:.0f} s warm-up, then {args.soak:.0f} s")
    warm = asyncio.run(level(url, clients, args.warmup, args.timeout, soak_request))
    print(f"warm-up: {warm['answered']} answered, {warm['errors']} errors", flush=True)
    pids = replica_processes(app)
    start = rss_bytes(pids)
    result = asyncio.run(level(url, clients, args.soak, args.timeout, soak_request))
    end = rss_bytes(replica_processes(app))
    print(
        f"soak: {result['rps']:.1f} req/s, p50 {result['p50']:.1f} ms, p99 {result['p99']:.1f} "
        f"ms; {result['answered']} answered, 503: {result['refused']}, timed out: "
        f"{result['timeouts']}, other errors: {result['errors']}"
    )
    growth = []
    for (deployment, pid), before in start.items():
        after = end.get((deployment, pid))
        if after is None:
            print(f"{deployment:<14} pid {pid}: replaced during the soak (no end figure)")
            continue
        growth.append(after / before)
        print(
            f"{deployment:<14} pid {pid}: RSS start {before / 2**20:7.1f} MiB, end "
            f"{after / 2**20:7.1f} MiB, x{after / before:.3f}"
        )
    return max(growth, default=float("nan"))


def search_request(path: str) -> Callable[[int], tuple[str, dict]]:
    """The levels' request: ``path`` with one of :data:`QUERIES`."""
    return lambda i: (path, {"query": QUERIES[i % len(QUERIES)], "k": 5})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clients", help="concurrency levels (default 8,32,128); with --soak one level (4)"
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--path", default="/v1/search", help="/v1/search or /v1/answer")
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument(
        "--soak", type=float, metavar="SECONDS", help="hold a moderate load; print replicas' RSS"
    )
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before a soak")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override"
    )
    args = parser.parse_args()

    from ray import serve

    from mrag.config import load_config, parse_overrides
    from mrag.pipelines.demo import make_sample_corpus
    from mrag.pipelines.ingest import run_ingest
    from mrag.serve.app import run_server

    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    folder = Path(tempfile.mkdtemp(prefix="mrag-bench-load-"))
    make_sample_corpus(folder / "corpus")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    overrides = {"db_uri": str(folder / "db"), "serve.port": port, **parse_overrides(args.set)}
    config = load_config(profile="offline", overrides=overrides)
    summary = run_ingest(config, [str(folder / "corpus")])
    print(f"corpus: {summary.render()}")
    url = run_server(config, blocking=False)
    figures = []
    try:
        if args.soak:
            from mrag.serve.builder import APP_NAME

            growth = soak(url, args, APP_NAME)
        else:
            for clients in (int(c) for c in (args.clients or "8,32,128").split(",")):
                result = asyncio.run(
                    level(url, clients, args.seconds, args.timeout, search_request(args.path))
                )
                figures.append(result)
                print(
                    f"{args.path} at {clients:>4} clients: {result['rps']:6.1f} req/s, "
                    f"p50 {result['p50']:7.1f} ms, p99 {result['p99']:7.1f} ms; "
                    f"503: {result['refused']} (within 100 ms: {result['refused_fast']}, "
                    f"p50 {result['refused_p50']:.1f} ms); timed out: {result['timeouts']}; "
                    f"other errors: {result['errors']}",
                    flush=True,
                )
    finally:
        serve.shutdown()
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    if args.soak:
        print(f"rss_growth={growth:.3f}")
    else:
        print("requests_per_s=" + ",".join(f"{f['clients']}:{f['rps']:.1f}" for f in figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
