"""Load on the Serve application: requests/s and latency at several concurrency levels.

    .venv/bin/python bench/serve_load.py [--clients 8,32,128] [--seconds 20] [--path /v1/search]

Ingests ``mrag demo``'s sample corpus (24 images, 3 short documents, 1 corrupt file) with the
offline profile, starts ``mrag serve`` on 127.0.0.1 (every deployment at its config defaults),
and for each level runs that many concurrent clients (one asyncio task each, one connection
each) sending text queries back to back for ``--seconds``. Per level it prints requests/s,
p50/p99 of the answered requests, how many were refused (503, and how fast) and how many timed
out (the client gives up after ``--timeout`` s). Last line::

    requests_per_s=<level>:<req/s>,...

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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

QUERIES = [
    "what are Saturn's rings made of?", "how long does the dough rise?", "a red circle",
    "encrypt a file for someone else", "blue stripes", "bake bread in a covered pot",
    "green triangle", "decrypt a file with gpg",
]  # fmt: skip


async def level(url: str, path: str, clients: int, seconds: float, timeout: float) -> dict:
    import httpx

    latencies: list[float] = []
    refused: list[float] = []
    timeouts = errors = 0
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        nonlocal timeouts, errors
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
            i = n
            while time.perf_counter() < deadline:
                body = {"query": QUERIES[i % len(QUERIES)], "k": 5}
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="8,32,128")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--path", default="/v1/search", help="/v1/search or /v1/answer")
    parser.add_argument("--timeout", type=float, default=30.0)
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
        for clients in (int(c) for c in args.clients.split(",")):
            result = asyncio.run(level(url, args.path, clients, args.seconds, args.timeout))
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
    print("requests_per_s=" + ",".join(f"{f['clients']}:{f['rps']:.1f}" for f in figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
