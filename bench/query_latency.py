"""Query latency benchmark: in-process search per mode and ``/v1/search`` over HTTP, or (with
``--rows N``) the self-tuning vector index at N rows.

    .venv/bin/python bench/query_latency.py [--sizes 10000,100000] [--queries 200]
    .venv/bin/python bench/query_latency.py --rows 100000 [--compare] [--queries 200]

Two modes; each prints its own last line.

Index mode (``--rows N``): writes N chunks (synthetic 512-d unit vectors around 64 cluster
centres, as below; 79 % text chunks with Zipf text, 10 % images, 10 % PDF pages and 1 % video
frames; uris in 100 folders ``/bench/sNN/``), then runs ``build_indices`` as ``mrag index``
does: the index type and partitions from the row count, then the query settings raised until
recall@10 on a sample of queries made from stored rows holds ``index.target_recall`` plus
``index.recall_margin`` (``mrag.store.index_tuning``), each setting tried printed with its
recall and p50/p99, and the build with progress lines. The chosen settings are then checked on
``--queries`` fresh held-out query vectors against exact search, for the index alone and through
the query path (``Retriever.search_vector``, which reads them from the table): recall@10, p50,
p99, and through the query path with two filters that keep 1 % of the rows
(``modality = video_frame`` and the uri prefix ``/bench/s07/``). ``--compare`` first builds
and tunes every other index of the ladder (each replaced by the next). Last line, for the index
``mrag index`` chose, on the held-out queries: the index alone (a LanceDB search returning row
ids with the tuned settings: the figure to set beside DESIGN.md's Indices table; the query
path's, ~2 ms more for reading and building the hits, is printed above it; without an index,
the query path's)::

    rows=<n> recall@10=<r> p50_ms=<ms>

Latency mode (default):

Builds one database per size (synthetic clustered unit vectors in both spaces, at the offline
profile's widths; a text column of Zipf-distributed English-like words for BM25; 80 % text
chunks, 10 % images, 10 % PDF pages; FTS, scalar and — at ``index.vector_min_rows`` and over —
vector indices, as ``mrag index`` builds them). Then, per size, p50/p99 of in-process
``QueryEngine.search`` per mode (query encoding included; plain modes without reranking,
``hybrid+rerank`` with the profile's reranker). For the largest size it starts Ray Serve on
127.0.0.1 with the mrag application and a trivial FastAPI deployment, and measures
``/v1/search`` (hybrid) and the trivial round trip over the same proxy. For the smallest size
it serves ``/v1/answer`` (the extractive generator): p50/p99 of the JSON answer, the time to the
first byte of a streamed one, and a burst of ``--burst`` concurrent answers (default four times
the ``serve.max_answers_in_flight`` the ingress admits at once): how many were answered,
refused with 503 (and within 100 ms), or timed out (the client waits 30 s). Last line::

    serve_overhead_ms_p50=<HTTP p50 - in-process hybrid p50 - trivial round trip p50>

Label the figures with the machine's load: other work on the cores moves every number.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("MRAG_PROFILE", "offline")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

WORDS = (
    "the of and to in is was for on that with as by at from his an were are which this be has "
    "had river mountain bread engine violin harbor lantern orchard comet glacier market tide "
    "signal forest copper meadow thunder anchor beacon canyon desert ember falcon garden island "
    "jungle kettle ladder mirror needle ocean pepper quartz saddle timber valley pump hinge "
    "report quarterly harvest rings saturn ice rock lava volcano chess king castle sourdough "
    "starter loaf crumb telescope lens light comet tail solar wind ticket login patch fault "
    "vaccine virus immune honey bees nectar tides moon orbit planet metal liquid toxic"
).split()
QUERIES = [
    "how do bakers get an open crumb", "rings of saturn ice", "volcano lava flows",
    "keep the king safe", "quarterly harvest report", "why does the comet tail point away",
    "river harbor lantern", "pump fault overheated", "honey bees nectar", "moon tides ocean",
    "copper engine signal", "glacier valley timber", "telescope lens light", "orchard market",
]  # fmt: skip


def _unit(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray) -> np.ndarray:
    vectors = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, dim))
    vectors = vectors.astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def build_db(db_uri: str, n_rows: int, config, seed: int = 0) -> float:
    """Writes ``n_rows`` chunks and builds the indices; returns seconds taken."""
    import pyarrow as pa

    from mrag.models import get_model_spec
    from mrag.pipelines.index import build_indices
    from mrag.store import schema
    from mrag.store.lance import Store

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    clip_dim = get_model_spec(config.clip_model).embed_dim
    text_dim = get_model_spec(config.text_model).embed_dim
    store = Store(db_uri)
    store.ensure_tables({"clip": clip_dim, "text_vec": text_dim})
    table = store.open(schema.CHUNKS)
    zipf = 1.0 / np.arange(1, len(WORDS) + 1)
    zipf /= zipf.sum()
    clip_centres = rng.standard_normal((64, clip_dim))
    text_centres = rng.standard_normal((64, text_dim))
    batch = 20_000
    for start in range(0, n_rows, batch):
        n = min(batch, n_rows - start)
        kind = rng.random(n)
        modality = np.where(kind < 0.8, "text", np.where(kind < 0.9, "image", "pdf_page"))
        is_text = modality == "text"
        words = rng.choice(len(WORDS), size=(n, 60), p=zipf)
        text = [" ".join(WORDS[w] for w in row) if t else None
                for row, t in zip(words, is_text, strict=True)]  # fmt: skip
        clip = _unit(rng, n, clip_dim, clip_centres)
        text_vec = _unit(rng, n, text_dim, text_centres)
        text_vec_arr = pa.FixedSizeListArray.from_arrays(pa.array(text_vec.ravel()), text_dim)
        text_vec_arr = pa.array(
            [v if t else None for v, t in zip(text_vec_arr.to_pylist(), is_text, strict=True)],
            type=pa.list_(pa.float32(), text_dim),
        )
        ids = [f"c{start + i}" for i in range(n)]
        rows = pa.table(
            {
                "chunk_id": ids,
                "asset_id": [f"a{(start + i) // 4}" for i in range(n)],
                "uri": [f"/bench/doc{(start + i) // 4}.txt" for i in range(n)],
                "modality": modality,
                "page": pa.array([None] * n, pa.int32()),
                "text": text,
                "clip": pa.FixedSizeListArray.from_arrays(pa.array(clip.ravel()), clip_dim),
                "clip_model": [config.clip_model] * n,
                "text_vec": text_vec_arr,
                "text_model": [config.text_model if t else None for t in is_text],
            }
        )
        columns = {
            f.name: rows[f.name] if f.name in rows.column_names else pa.nulls(n, f.type)
            for f in table.schema
        }
        rows = pa.table(columns, schema=table.schema)
        table.add(rows)
    table.optimize()
    build_indices(store, config.index)
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------------
# Index mode (--rows N)

INDEX_DIM = 512
#: Rows of the rare modality and of one uri folder: each keeps 1 % of the table.
RARE_MODALITY = "video_frame"
RARE_PREFIX = "/bench/s07/"


def _say(line: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {line}", flush=True)


def write_index_db(db_uri: str, n_rows: int, dim: int, seed: int = 0) -> np.ndarray:
    """Writes ``n_rows`` chunks with ``dim``-d ``clip`` vectors; returns the cluster centres
    (held-out queries come from the same distribution)."""
    import pyarrow as pa

    from mrag.store import schema
    from mrag.store.lance import Store

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, dim))
    store = Store(db_uri)
    store.ensure_tables({"clip": dim})
    table = store.open(schema.CHUNKS)
    zipf = 1.0 / np.arange(1, len(WORDS) + 1)
    zipf /= zipf.sum()
    words = np.asarray(WORDS)
    started = time.perf_counter()
    batch = 50_000
    for start in range(0, n_rows, batch):
        n = min(batch, n_rows - start)
        kind = rng.random(n)
        modality = np.select(
            [kind < 0.01, kind < 0.80, kind < 0.90], [RARE_MODALITY, "text", "image"], "pdf_page"
        )
        is_text = modality == "text"
        text_words = words[rng.choice(len(WORDS), size=(n, 60), p=zipf)]
        text = [" ".join(row) if t else None for row, t in zip(text_words, is_text, strict=True)]
        asset = (start + np.arange(n)) // 4
        clip = _unit(rng, n, dim, centres)
        rows = {
            "chunk_id": [f"c{start + i}" for i in range(n)],
            "asset_id": [f"a{a}" for a in asset],
            "uri": [f"/bench/s{a % 100:02d}/doc{a}.txt" for a in asset],
            "modality": modality,
            "text": text,
            "clip": pa.FixedSizeListArray.from_arrays(pa.array(clip.ravel()), dim),
            "clip_model": ["bench-512"] * n,
        }
        columns = [
            pa.array(rows[f.name], f.type) if f.name in rows else pa.nulls(n, f.type)
            for f in table.schema
        ]
        store.append(schema.CHUNKS, pa.Table.from_arrays(columns, schema=table.schema))
        done = start + n
        if done % 200_000 == 0 or done == n_rows:
            _say(f"wrote {done:,} rows in {time.perf_counter() - started:.1f} s")
    table.checkout_latest()
    table.optimize()
    return centres


def evaluate_query_path(
    store, queries: np.ndarray, truth: list[np.ndarray], filters=None
) -> tuple[float, float, float]:
    """(recall@10, p50 ms, p99 ms) of ``Retriever.search_vector`` on ``queries``."""
    from mrag.retrieve.search import Retriever

    retriever = Retriever(store)  # a new one: it reads the current version's settings
    retriever.search_vector(queries[0], k=10, column="clip", filters=filters)  # warm
    recalls, took = [], []
    for vector, exact in zip(queries, truth, strict=True):
        started = time.perf_counter()
        hits = retriever.search_vector(vector, k=10, column="clip", filters=filters)
        took.append(time.perf_counter() - started)
        if len(exact):
            recalls.append(len({h.chunk_id for h in hits} & set(exact.tolist())) / len(exact))
    p50, p99 = percentiles(took)
    return float(np.mean(recalls)), p50, p99


def check_query_path(store, label: str, held_out: dict) -> tuple[float, float]:
    """Prints recall and latency of the index alone and through the query path, unfiltered and
    with the 1 % filters; returns the index's own (recall, p50), or the query path's when the
    column has no index."""
    from mrag.retrieve.search import Retriever
    from mrag.store import index_tuning, schema

    queries = held_out["queries"]
    settings = Retriever(store).index_settings("clip")
    shown = "exact search" if settings is None else settings.describe()
    print(f"  {label}: the query path searches with {shown}")
    alone = None
    if settings is not None:
        # The index alone (LanceDB search, row ids only), as the tuner measures it.
        table = store.open(schema.CHUNKS)
        truth = index_tuning.exact_neighbours(table.to_lance(), "clip", queries)
        sample = index_tuning.RecallSample(queries, truth)
        alone = index_tuning.measure(table, "clip", sample, settings)
        print(
            f"  {label}: held-out, index alone: recall@10 {alone.recall:.3f}, "
            f"p50 {alone.p50_ms:.2f} ms, p99 {alone.p99_ms:.2f} ms"
        )
    recall, p50, p99 = evaluate_query_path(store, queries, held_out["truth"])
    print(
        f"  {label}: held-out, query path (Retriever.search_vector, k=10): recall@10 "
        f"{recall:.3f}, p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    )
    for name, filters, truth in held_out["filtered"]:
        f_recall, f_p50, f_p99 = evaluate_query_path(store, queries, truth, filters)
        print(
            f"  {label}: filtered ({name}, 1 % of rows), query path: recall@10 {f_recall:.3f}, "
            f"p50 {f_p50:.2f} ms, p99 {f_p99:.2f} ms"
        )
    return (recall, p50) if alone is None else (alone.recall, alone.p50_ms)


def index_mode(args: argparse.Namespace) -> int:
    from mrag.config import load_config, parse_overrides
    from mrag.pipelines.index import build_indices
    from mrag.retrieve.search import SearchFilters
    from mrag.store import index_tuning, schema
    from mrag.store.lance import Store

    n_rows, dim = args.rows, args.dim
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    folder = Path(args.db or tempfile.mkdtemp(prefix="mrag-bench-index-"))
    overrides = {"db_uri": str(folder / f"db-{n_rows}"), **parse_overrides(args.set)}
    if args.vector_min_rows is not None:
        overrides["index.vector_min_rows"] = args.vector_min_rows
    config = load_config(profile="offline", overrides=overrides)
    shown = {k: v for k, v in overrides.items() if k != "db_uri"}
    print(f"{n_rows:,} rows x {dim}-d, {config.db_uri}; settings: {shown or 'defaults'}")
    centres = write_index_db(config.db_uri, n_rows, dim)
    store = Store(config.db_uri)
    table = store.open(schema.CHUNKS)

    # Held-out queries (not rows of the table) and their exact answers, by chunk id.
    queries = _unit(np.random.default_rng(12345), args.queries, dim, centres)
    dataset = table.to_lance()
    started = time.perf_counter()

    def exact(where: str | None) -> list[np.ndarray]:
        return index_tuning.exact_neighbours(
            dataset, "clip", queries, where=where, id_column="chunk_id"
        )

    held_out = {
        "queries": queries,
        "truth": exact(None),
        "filtered": [
            (
                f"modality={RARE_MODALITY}",
                SearchFilters(modality=RARE_MODALITY),
                exact(f"modality = '{RARE_MODALITY}'"),
            ),
            (
                f"uri prefix {RARE_PREFIX}",
                SearchFilters(uri_prefix=RARE_PREFIX),
                exact(f"starts_with(uri, '{RARE_PREFIX}')"),
            ),
        ],
    }
    print(f"exact top-10 of {len(queries)} held-out queries (3 passes) in "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip

    ladder = index_tuning.index_ladder(n_rows, dim, config.index)
    if args.compare and len(ladder) > 1:
        sample = index_tuning.recall_sample(
            table, "clip", rows=n_rows, config=config.index, progress=_say
        )
        for spec in ladder[1:]:
            print(f"compare: {spec.describe()}")
            built, build_s = index_tuning.build_index(table, "clip", spec, progress=_say)
            record = index_tuning.tune_index(
                table, "clip", built, sample, rows=n_rows, config=config.index,
                build_s=build_s, progress=_say,
            )  # fmt: skip
            print(f"  chosen: {record.settings.describe()}, sample recall@10 "
                  f"{record.recall_at_10:.3f}, build {build_s:.1f} s")  # fmt: skip
            check_query_path(store, spec.index_type, held_out)

    print("mrag index (build_indices):")
    report = build_indices(store, config.index, rebuild_vectors=True, progress=_say)
    print("\n".join(f"  {line}" for line in report.render().splitlines()))
    label = report.vector.get("clip", {}).get("index_type", "exact")
    recall, p50 = check_query_path(store, label, held_out)
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    print(f"rows={n_rows} recall@10={recall:.3f} p50_ms={p50:.2f}")
    return 0


# ------------------------------------------------------------------------------------------------
# Latency mode


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples_s) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def time_calls(call, n: int, warm: int = 5) -> tuple[float, float]:
    for i in range(warm):
        call(i)
    samples = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - started)
    return percentiles(samples)


def in_process(config, n_queries: int) -> dict[str, tuple[float, float] | None]:
    from mrag.query import QueryEngine

    engine = QueryEngine.for_config(config)
    out: dict[str, tuple[float, float] | None] = {}
    for mode in ("vector", "fts", "hybrid"):
        out[mode] = time_calls(
            lambda i, m=mode: engine.search(QUERIES[i % len(QUERIES)], k=10, mode=m, rerank=False),
            n_queries,
        )
    out["hybrid+rerank"] = None
    if engine.reranker is not None:
        out["hybrid+rerank"] = time_calls(
            lambda i: engine.search(QUERIES[i % len(QUERIES)], k=10, rerank=True), n_queries
        )
    return out


def over_http(config, n_queries: int) -> tuple[tuple[float, float], tuple[float, float], float]:
    """(/v1/search hybrid p50/p99, trivial deployment round trip p50/p99, in-process hybrid
    p50 measured right after, with the replicas up), ms."""
    import httpx
    from ray import serve

    from mrag.serve.app import run_server

    url = run_server(config, blocking=False)
    deploy_trivial()
    try:
        with httpx.Client(base_url=url, timeout=60) as client:

            def search(i: int) -> None:
                body = {"query": QUERIES[i % len(QUERIES)], "k": 10, "rerank": False}
                response = client.post("/v1/search", json=body)
                response.raise_for_status()

            def trivial(i: int) -> None:
                client.post("/trivial/", json={"query": "x"}).raise_for_status()

            first = time.perf_counter()
            search(0)
            print(f"  first /v1/search after deploy: {(time.perf_counter() - first) * 1000:.1f} ms")
            http = time_calls(search, n_queries)
            round_trip = time_calls(trivial, n_queries)
            # In-process again, now, beside the idle replicas: the same machine state.
            from mrag.query import QueryEngine

            engine = QueryEngine.for_config(config)
            in_process_p50 = time_calls(
                lambda i: engine.search(QUERIES[i % len(QUERIES)], k=10, rerank=False), n_queries
            )[0]
    finally:
        serve.shutdown()
    return http, round_trip, in_process_p50


def burst_of(url: str, path: str, burst: int) -> list[tuple[str, float]]:
    """``burst`` concurrent POSTs (one connection each): (status or "timeout", seconds) each."""
    import asyncio

    import httpx

    async def one(client: httpx.AsyncClient, i: int) -> tuple[str, float]:
        started = time.perf_counter()
        try:
            response = await client.post(path, json={"query": QUERIES[i % len(QUERIES)]})
            outcome = str(response.status_code)
        except httpx.TimeoutException:
            outcome = "timeout"
        return outcome, time.perf_counter() - started

    async def storm() -> list[tuple[str, float]]:
        limits = httpx.Limits(max_connections=burst, max_keepalive_connections=burst)
        async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
            return await asyncio.gather(*(one(client, i) for i in range(burst)))

    return asyncio.run(storm())


def deploy_trivial() -> None:
    """A FastAPI deployment that answers at once, at ``/trivial/`` on the running Serve."""
    from fastapi import FastAPI
    from ray import serve

    trivial_api = FastAPI()

    @trivial_api.post("/")
    async def echo() -> dict:
        return {"hits": []}

    @serve.deployment(name="Trivial", ray_actor_options={"num_cpus": 0.1})
    @serve.ingress(trivial_api)
    class Trivial:
        pass

    serve.run(Trivial.bind(), name="trivial", route_prefix="/trivial")


def trivial_under_burst(url: str, burst: int) -> float:
    """p50 ms of the trivial deployment under the same burst, through the same proxy."""
    from ray import serve

    deploy_trivial()
    try:
        outcomes = burst_of(url, "/trivial/", burst)
    finally:
        serve.delete("trivial")
    return float(np.percentile([took for _, took in outcomes], 50)) * 1000


def answers_over_http(config, n_queries: int, burst: int) -> None:
    """Prints /v1/answer p50/p99, time to first streamed byte, and the burst's outcome."""

    import httpx
    from ray import serve

    from mrag.serve.app import run_server

    url = run_server(config, blocking=False)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:

            def ask(i: int) -> None:
                body = {"query": QUERIES[i % len(QUERIES)], "rerank": False}
                client.post("/v1/answer", json=body).raise_for_status()

            first_byte: list[float] = []

            def ask_streamed(i: int) -> None:
                body = {"query": QUERIES[i % len(QUERIES)], "rerank": False, "stream": True}
                started = time.perf_counter()
                with client.stream("POST", "/v1/answer", json=body) as response:
                    response.raise_for_status()
                    for n, _ in enumerate(response.iter_bytes()):
                        if n == 0:
                            first_byte.append(time.perf_counter() - started)

            p50, p99 = time_calls(ask, n_queries)
            stream_p50, _ = time_calls(ask_streamed, n_queries)
            ttfb_p50, ttfb_p99 = percentiles(first_byte[5:])  # the timed calls only
        print(
            f"{config.db_uri.rsplit('-', 1)[-1]} chunks over HTTP: /v1/answer (extractive) "
            f"p50 {p50:.2f} ms p99 {p99:.2f} ms; streamed: first byte p50 {ttfb_p50:.2f} ms "
            f"p99 {ttfb_p99:.2f} ms, whole stream p50 {stream_p50:.2f} ms"
        )

        outcomes = burst_of(url, "/v1/answer", burst)
        floor = trivial_under_burst(url, burst)
        refused = [took for outcome, took in outcomes if outcome == "503"]
        quick = sum(took <= 0.1 for took in refused)
        kinds = sorted({outcome for outcome, _ in outcomes})
        counts = {kind: sum(1 for outcome, _ in outcomes if outcome == kind) for kind in kinds}
        refused_p50 = float(np.percentile(refused, 50)) * 1000 if refused else 0.0
        print(
            f"  burst of {burst} concurrent /v1/answer (admitted at once per ingress: "
            f"{config.serve.max_answers_in_flight}): {counts}; 503 within 100 ms: "
            f"{quick}/{len(refused)} (share of the burst {quick / burst:.2f}; 503 p50 "
            f"{refused_p50:.0f} ms); timed out: {counts.get('timeout', 0)}; the same burst "
            f"on a trivial deployment: p50 {floor:.0f} ms (the proxy's own floor)"
        )
    finally:
        serve.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, default=None,
        help="index mode: N rows, the self-tuning vector index (last line rows=...)",
    )  # fmt: skip
    parser.add_argument("--dim", type=int, default=INDEX_DIM, help="index mode: vector width")
    parser.add_argument(
        "--compare", action="store_true",
        help="index mode: also build and tune every other index the row count allows",
    )  # fmt: skip
    parser.add_argument("--db", help="index mode: folder for the database (default: a temp dir)")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument(
        "--queries", type=int, default=200,
        help="timed calls per mode; index mode: held-out queries",
    )  # fmt: skip
    parser.add_argument("--no-http", action="store_true")
    parser.add_argument(
        "--burst", type=int, default=0,
        help="concurrent answers in the burst (0: four times serve.max_answers_in_flight)",
    )  # fmt: skip
    parser.add_argument(
        "--vector-min-rows", type=int, default=None,
        help="index.vector_min_rows (latency mode default 50000; index mode: the config's)",
    )  # fmt: skip
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.FIELD=VALUE", help="config override"
    )
    args = parser.parse_args(argv)
    if args.rows is not None:
        if args.rows < 1 or args.queries < 1:
            parser.error("--rows and --queries must be >= 1")
        return index_mode(args)
    if args.vector_min_rows is None:
        args.vector_min_rows = 50_000

    from mrag.config import load_config
    from mrag.ray_runtime import init_ray

    sizes = [int(s) for s in args.sizes.split(",")]
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.2f} at start")
    folder = Path(tempfile.mkdtemp(prefix="mrag-bench-query-"))
    results = {}
    config = None
    configs = []
    # Vector indices from 50k rows: exact search over the 80k text_vec rows of the 100k table
    # took ~50 ms a query here (index.vector_min_rows defaults to 100k).
    from mrag.config import parse_overrides

    overrides = {"index.vector_min_rows": args.vector_min_rows, **parse_overrides(args.set)}
    print("settings: " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
    for n_rows in sizes:
        overrides["db_uri"] = str(folder / f"db-{n_rows}")
        config = load_config(profile="offline", overrides=overrides)
        configs.append(config)
        took = build_db(config.db_uri, n_rows, config)
        print(f"{n_rows} chunks: built with indices in {took:.1f} s")
        results[n_rows] = in_process(config, args.queries)
        for mode, figures in results[n_rows].items():
            shown = "n/a (no reranker wired into the query path)" if figures is None else (
                f"p50 {figures[0]:6.2f} ms  p99 {figures[1]:6.2f} ms")  # fmt: skip
            print(f"  in-process {mode:<14} {shown}")
    if args.no_http or config is None:
        return 0
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        config.serve.port = sock.getsockname()[1]
    init_ray(num_cpus=os.cpu_count() or 2)
    configs[0].serve.port = config.serve.port
    burst = args.burst or 4 * configs[0].serve.max_answers_in_flight
    answers_over_http(configs[0], args.queries, burst)
    (http_p50, http_p99), (trip_p50, trip_p99), hybrid_p50 = over_http(config, args.queries)
    print(
        f"{sizes[-1]} chunks over HTTP: /v1/search hybrid p50 {http_p50:.2f} ms"
        f" p99 {http_p99:.2f} ms; trivial deployment round trip p50 {trip_p50:.2f} ms"
        f" p99 {trip_p99:.2f} ms; in-process hybrid p50 {hybrid_p50:.2f} ms (same moment)"
    )
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    print(f"serve_overhead_ms_p50={http_p50 - hybrid_p50 - trip_p50:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
