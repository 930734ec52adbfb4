"""Load on the Serve application: requests/s and latency at several concurrency levels, a soak
that watches each deployment's memory, or what each Ray hop of a search costs.

    .venv/bin/python bench/serve_load.py [--clients 8,32,128] [--seconds 20] [--path /v1/search]
    .venv/bin/python bench/serve_load.py --soak 600 [--warmup 60] [--clients 4]
    .venv/bin/python bench/serve_load.py --hops [--queries 300]

Ingests ``mrag demo``'s sample corpus (24 images, 3 short documents, 1 corrupt file) with the
offline profile, starts ``mrag serve`` on 127.0.0.1 (every deployment at its config defaults),
and for each level runs that many concurrent clients (one asyncio task each, one connection
each) sending text queries back to back for ``--seconds``. Per level it prints requests/s
(answered ones: the goodput), p50/p99 of the answered requests, how many were refused (503, and
how fast) and how many timed out (the client gives up after ``--timeout`` s); then each
deployment's running replicas over the level (sampled from ``serve.status()`` every second:
``QueryEncoder 1 (0 s) > 2 (7 s)``) and the ingress's admission limit at its end. The last two
lines::

    requests_per_s=<level>:<req/s>,...
    goodput_128_vs_8=<answered req/s at 128 clients / answered req/s at 8 clients, same run>

Clients behave as well-behaved HTTP clients do: after a 503 they wait the ``Retry-After``
seconds (times a random 1-1.5, so clients refused together do not come back together), or,
without the header, an exponential backoff from 0.1 s to 5 s; ``--retry-after ignore`` makes
them retry after 50 ms whatever the server says (how the benchmark behaved before: a client that
hammers). To watch the query encoder autoscale with the load (two quarter-CPU replicas fit
beside the rest on 2 cores; a search spends little of its time in the encoder, so the target
per replica is low)::

    .venv/bin/python bench/serve_load.py --set serve.encoder_max_replicas=2 \
        --set serve.encoder_num_cpus=0.25 --set serve.encoder_target_ongoing_requests=1 \
        --set serve.autoscale_upscale_delay_s=2 --set serve.autoscale_downscale_delay_s=5 \
        --set serve.autoscale_look_back_s=3 --set serve.autoscale_metrics_interval_s=0.5

``--soak SECONDS`` holds a moderate load instead (``--clients``, default 4, each cycling through
searches that rerank and answers, so every deployment works), first for ``--warmup`` seconds,
then for SECONDS. It prints the resident memory (RSS) of every replica of every deployment at
the start and at the end of the soak (replicas found in the GCS's actor table by their
``ServeReplica:<app>:<deployment>`` class, RSS read with psutil) and ends with::

    rss_growth=<the largest end/start over the replicas>

(target: at most 1.05 over 10 minutes after warm-up).

``--hops`` measures the cost of a Ray hop and of each layout of a search. First a trivial FastAPI
deployment behind the same proxy, answering at once or after 1, 2 or 3 calls to a trivial
deployment (handle → replica → back): p50 of ``--queries`` sequential requests and the CPU time
per request of every Serve process (proxy, replicas; psutil). Then ``/v1/search`` with the
stages as deployments (``serve.retriever_replicas: 1``, ``serve.reranker_replicas: 1``: ingress →
encoder → retriever → reranker) and folded into the ingress (both 0: ingress → encoder): p50 of
sequential searches, answered/s with 8 clients for ``--seconds`` and the CPU per search of each
process; and the in-process search (``QueryEngine.search``, same queries). Last line::

    hop_ms_p50=<(p50 with 3 calls - p50 with none) / 3>,hop_cpu_ms=<CPU per call, all processes>

Label the figures with the machine's load: other work on the cores moves every number.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import sys
import tempfile
import threading
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
    honour_retry_after: bool = True,
) -> dict:
    """``clients`` concurrent clients, each sending ``request_for(i)`` (path, JSON body) for
    i = its number, its number + 1, ... back to back for ``seconds``; after a 503 a client waits
    as :func:`backoff_s` says."""
    import ssl

    import httpx

    latencies: list[float] = []
    refused: list[float] = []
    timeouts = errors = 0
    # httpx builds an SSL context per client unless given one: 22 ms of CPU each, 3 s for 128
    # clients at the level's start, on the cores the server uses.
    tls = ssl.create_default_context()
    deadline = time.perf_counter() + seconds

    async def client(n: int) -> None:
        nonlocal timeouts, errors
        async with httpx.AsyncClient(
            base_url=url, timeout=timeout, headers=headers, verify=tls
        ) as http:
            i = n
            refusals_in_a_row = 0
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
                    refusals_in_a_row = 0
                elif response.status_code == 503:
                    refused.append(took)
                    refusals_in_a_row += 1
                    retry_after = response.headers.get("retry-after")
                    wait_s = backoff_s(
                        retry_after if honour_retry_after else None,
                        refusals_in_a_row if honour_retry_after else 0,
                    )
                    await asyncio.sleep(min(wait_s, max(0.0, deadline - time.perf_counter())))
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


def backoff_s(retry_after: str | None, refusals_in_a_row: int) -> float:
    """How long a client waits after a 503: the ``Retry-After`` seconds times a random 1-1.5;
    without one, 0.1 s doubling per refusal in a row up to 5 s (same jitter); 50 ms when
    ``refusals_in_a_row`` is 0 (a client that ignores the server)."""
    jitter = random.uniform(1.0, 1.5)
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after)) * jitter
        except ValueError:  # an HTTP date: not sent by this server
            pass
    if refusals_in_a_row == 0:
        return 0.05
    return min(5.0, 0.1 * 2 ** (refusals_in_a_row - 1)) * jitter


class ReplicaWatch:
    """Samples each deployment's RUNNING replicas from ``serve.status()`` (public API) every
    ``every_s`` in a thread, for a level; :meth:`render` says how the counts moved."""

    def __init__(self, app: str, every_s: float = 1.0) -> None:
        self.app = app
        self.every_s = every_s
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ReplicaWatch:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append((time.perf_counter() - self._started, running_replicas(self.app)))
            if self._stop.wait(self.every_s):
                return

    def render(self) -> str:
        """``QueryEncoder 1 (0 s) > 2 (7 s); Reranker 1; ...``: each count and when it began."""
        names = sorted({name for _, counts in self.samples for name in counts})
        shown = []
        for name in names:
            steps: list[tuple[float, int]] = []
            for at, counts in self.samples:
                count = counts.get(name, 0)
                if not steps or steps[-1][1] != count:
                    steps.append((at, count))
            if len(steps) == 1:
                shown.append(f"{name} {steps[0][1]}")
            else:
                shown.append(f"{name} " + " > ".join(f"{n} ({at:.0f} s)" for at, n in steps))
        return "; ".join(shown)


def running_replicas(app: str) -> dict[str, int]:
    """``{deployment: RUNNING replicas}`` of the application, from ``serve.status()``."""
    from ray import serve

    application = serve.status().applications.get(app)
    if application is None:
        return {}
    return {
        name: deployment.replica_states.get("RUNNING", 0)
        for name, deployment in application.deployments.items()
    }


def admission_stats(app: str) -> dict:
    """The ingress's ``/v1/search`` admission (one replica's: the handle picks one)."""
    from ray import serve

    handle = serve.get_deployment_handle("SearchIngress", app_name=app)
    return handle.admission.remote().result(timeout_s=30)


def serve_processes(app: str | None = None) -> dict[str, int]:
    """``{name: pid}`` of Serve's proxy and the replicas (of ``app``, or every application)."""
    from ray._private import state

    found = {}
    for actor in state.actors().values():
        name = actor.get("ActorClassName", "")
        if actor.get("State") != "ALIVE" or not actor.get("Pid"):
            continue
        if name.startswith("ServeReplica:") and (app is None or name.split(":")[1] == app):
            found[name.rsplit(":", 1)[-1]] = int(actor["Pid"])
        elif "ProxyActor" in name:
            found["Proxy"] = int(actor["Pid"])
    return found


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    out = {}
    for name, pid in pids.items():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        out[name] = times.user + times.system
    return out


def sequential(call: Callable[[int], object], n: int, warm: int = 10) -> float:
    """p50 ms of ``n`` calls one after another (after ``warm`` untimed ones)."""
    for i in range(warm):
        call(i)
    took = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        took.append(time.perf_counter() - started)
    return float(np.percentile(took, 50)) * 1000


def cpu_per_call(pids: dict[str, int], run: Callable[[], int]) -> dict[str, float]:
    """CPU ms per call of each process while ``run()`` makes (and returns) that many calls."""
    before = cpu_seconds(pids)
    calls = max(1, run())
    after = cpu_seconds(pids)
    return {k: (after[k] - before[k]) * 1000 / calls for k in before if k in after}


def _shown(cpu: dict[str, float]) -> str:
    parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1]))
    return f"{sum(cpu.values()):.1f} ({parts})"


def hop_costs(url: str, n: int) -> tuple[float, float]:
    """A trivial ingress making 0-3 calls to a trivial deployment: prints p50 and CPU per
    request; returns (ms, CPU ms) per call."""
    import httpx
    from fastapi import FastAPI
    from ray import serve

    api = FastAPI()

    @serve.deployment(name="Leaf", ray_actor_options={"num_cpus": 0.05})
    class Leaf:
        async def __call__(self, value: int) -> int:
            return value

    @serve.deployment(name="Front", ray_actor_options={"num_cpus": 0.05})
    @serve.ingress(api)
    class Front:
        def __init__(self, leaf: object) -> None:
            self.leaf = leaf

        @api.post("/")
        async def calls(self, body: dict) -> dict:
            for _ in range(int(body["calls"])):
                await self.leaf.remote(1)
            return {"hits": []}

    serve.run(Front.bind(Leaf.bind()), name="hops", route_prefix="/hops")
    pids = serve_processes("hops")
    pids["Proxy"] = serve_processes()["Proxy"]
    p50s, cpus = {}, {}
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for calls in range(4):

                def call(i: int, calls: int = calls) -> None:
                    client.post("/hops/", json={"calls": calls}).raise_for_status()

                def repeat(call: Callable[[int], None] = call) -> int:
                    for i in range(n):
                        call(i)
                    return n

                p50s[calls] = sequential(call, n)
                cpus[calls] = cpu_per_call(pids, repeat)
                print(
                    f"trivial ingress + {calls} calls: p50 {p50s[calls]:6.2f} ms; CPU ms per "
                    f"request {_shown(cpus[calls])}",
                    flush=True,
                )
    finally:
        serve.delete("hops")
    return (p50s[3] - p50s[0]) / 3, (sum(cpus[3].values()) - sum(cpus[0].values())) / 3


def layouts(config_for: Callable[[dict], object], n: int, seconds: float) -> None:
    """/v1/search with the stages as deployments and folded into the ingress (module
    docstring), then the in-process search."""
    from ray import serve

    from mrag.query import QueryEngine
    from mrag.serve.app import run_server
    from mrag.serve.builder import APP_NAME

    shapes = {
        "deployments (ingress > encoder > retriever > reranker)": 1,
        "folded (ingress > encoder)": 0,
    }
    for shape, replicas in shapes.items():
        config = config_for(
            {"serve.retriever_replicas": replicas, "serve.reranker_replicas": replicas}
        )
        url = run_server(config, blocking=False)
        try:
            p50, rps, cpu = search_costs(url, APP_NAME, n, seconds)
        finally:
            serve.delete(APP_NAME)
        print(
            f"/v1/search, {shape}: sequential p50 {p50:.2f} ms; 8 clients {rps:.1f} req/s; "
            f"CPU ms per search {_shown(cpu)}",
            flush=True,
        )
    engine = QueryEngine.for_config(config_for({}))
    p50 = sequential(lambda i: engine.search(QUERIES[i % len(QUERIES)], k=5), n)
    print(f"in-process search (QueryEngine.search, same queries): p50 {p50:.2f} ms", flush=True)


def search_costs(url: str, app: str, n: int, seconds: float) -> tuple[float, float, dict]:
    """(p50 ms of ``n`` sequential searches, answered/s with 8 clients for ``seconds``, CPU ms
    per search of each Serve process under those 8 clients)."""
    import httpx

    request_for = search_request("/v1/search")
    with httpx.Client(base_url=url, timeout=60) as client:

        def search(i: int) -> None:
            path, body = request_for(i)
            client.post(path, json=body).raise_for_status()

        p50 = sequential(search, n)
    pids = serve_processes(app)
    pids["Proxy"] = serve_processes()["Proxy"]
    result: dict = {}

    def load() -> int:
        result.update(asyncio.run(level(url, 8, seconds, 30, request_for)))
        return result["answered"]

    cpu = cpu_per_call(pids, load)
    return p50, result["rps"], cpu


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
        "--hops", action="store_true", help="cost of a Ray hop and of each search layout"
    )
    parser.add_argument("--queries", type=int, default=300, help="--hops: sequential requests")
    parser.add_argument(
        "--retry-after", choices=("honour", "ignore"), default="honour",
        help="clients after a 503: wait Retry-After (default), or retry after 50 ms",
    )  # fmt: skip
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
    if args.hops:
        from mrag.ray_runtime import init_ray

        init_ray(config.ray_address)
        serve.start(http_options={"host": config.serve.host, "port": config.serve.port})
        try:
            hop_ms, hop_cpu_ms = hop_costs(f"http://127.0.0.1:{port}", args.queries)
            layouts(
                lambda more: load_config(profile="offline", overrides={**overrides, **more}),
                args.queries,
                min(args.seconds, 10.0),
            )
        finally:
            serve.shutdown()
        print(f"load average {os.getloadavg()[0]:.2f} at end")
        print(f"hop_ms_p50={hop_ms:.2f},hop_cpu_ms={hop_cpu_ms:.2f}")
        return 0
    url = run_server(config, blocking=False)
    from mrag.serve.builder import APP_NAME

    figures = []
    print(
        f"clients after a 503: {args.retry_after} Retry-After; admission target "
        f"{config.serve.admission_target_latency_s} s; replicas: {running_replicas(APP_NAME)}"
    )
    try:
        if args.soak:
            growth = soak(url, args, APP_NAME)
        else:
            for clients in (int(c) for c in (args.clients or "8,32,128").split(",")):
                with ReplicaWatch(APP_NAME) as replicas:
                    result = asyncio.run(
                        level(
                            url, clients, args.seconds, args.timeout, search_request(args.path),
                            honour_retry_after=args.retry_after == "honour",
                        )
                    )  # fmt: skip
                figures.append(result)
                print(
                    f"{args.path} at {clients:>4} clients: {result['rps']:6.1f} req/s, "
                    f"p50 {result['p50']:7.1f} ms, p99 {result['p99']:7.1f} ms; "
                    f"503: {result['refused']} (within 100 ms: {result['refused_fast']}, "
                    f"p50 {result['refused_p50']:.1f} ms); timed out: {result['timeouts']}; "
                    f"other errors: {result['errors']}",
                    flush=True,
                )
                print(f"  replicas: {replicas.render()}", flush=True)
                print(f"  admission at the end: {admission_stats(APP_NAME)}", flush=True)
    finally:
        serve.shutdown()
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    if args.soak:
        print(f"rss_growth={growth:.3f}")
        return 0
    print("requests_per_s=" + ",".join(f"{f['clients']}:{f['rps']:.1f}" for f in figures))
    rates = {f["clients"]: f["rps"] for f in figures}
    ratio = f"{rates[128] / rates[8]:.2f}" if rates.get(8) and 128 in rates else "n/a"
    print(f"goodput_128_vs_8={ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
