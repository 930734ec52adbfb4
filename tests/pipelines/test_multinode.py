"""Many nodes on one machine: ``ray.cluster_utils.Cluster`` with a head and two workers of
different CPU counts, one of them carrying ``accel``, a custom resource standing in for GPUs.

- the ingest job's embedding actor lands only on the ``accel`` node, its decode tasks spread
  over the nodes, and its tables equal a single-node run's (chunk ids and vectors);
- the Serve application puts its model deployments on the ``accel`` node, the ingress anywhere;
- a worker node removed mid-job: the job finishes and every object is there exactly once.

All traffic stays on loopback: conftest sets ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before Ray
is imported, so every node advertises 127.0.0.1 (``ray start`` would resolve 127.0.0.1 to the
machine's own address: never used here), and each test checks every node's address and every
listening socket of every node's processes. Placement comes from Ray's state API (the head's
dashboard); each test prints where every actor and task ran (``pytest -s`` shows it).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from mrag.config import MragConfig, load_config
from mrag.store import schema
from mrag.store.lance import Store
from tests.doc_media import mixed_corpus
from tests.media import encode, good_images, pattern
from tests.processes import (
    is_loopback,
    mrag_command,
    not_on_loopback,
    stop_tree,
    tcp_listeners,
    user_env,
)

if TYPE_CHECKING:
    from pathlib import Path

    from ray.cluster_utils import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The custom resource of the "GPU" node.
ACCEL = "accel"
HEAD, CPU_WORKER, ACCEL_WORKER = "head", "cpu-worker", "accel-worker"
#: The nodes as the fixture starts them: role → (CPUs, custom resources).
NODES: dict[str, tuple[int, dict[str, float]]] = {
    HEAD: (1, {}),
    CPU_WORKER: (1, {}),
    ACCEL_WORKER: (2, {ACCEL: 1}),
}
JOB_TIMEOUT_S = 300
#: Pictures on top of tests.media.good_images and three text documents: 27 objects, enough
#: for 14 decode tasks of 2 objects, 3 at a time.
EXTRA_IMAGES = 14
#: Every setting both the cluster runs and the single-node reference run use.
JOB_SETTINGS = {
    "ingest.decode_tasks": 3,
    "ingest.decode_task_objects": 2,
    "ingest.read_batch_size": 2,
    "ingest.write_batch_rows": 4,
    "ingest.embed_batch_size": 4,
    "ingest.text_sort_window": 4,
    "ingest.torch_threads": 1,
    "index.auto_after_ingest": False,
}
#: The stages, as they appear in the names Ray gives their tasks and actors
#: ("MapBatches(_decode)", "MapWorker(MapBatches(MeteredEmbedStage))").
DECODE, EMBED = "(_decode)", "EmbedStage)"
#: The Serve deployments that load models (placed by serve.model_resources), and the ingress.
MODEL_DEPLOYMENTS = ("QueryEncoder", "Reranker", "Generator")
INGRESS = "SearchIngress"
#: Ray Data's own bookkeeping actors and their calls, left out of the printed placement.
RAY_BOOKKEEPING = (
    "ActorLocationTracker", "_AutoscalingCoordinatorActor", "AutoscalingCoordinator",
    "_StatsActor", "datasets_stats_actor", "_UsageCollectionActor", "DataUsageCollectionActor",
)  # fmt: skip


@dataclass
class Nodes:
    """The running cluster: its nodes by role, and the state API's address."""

    cluster: Cluster
    dashboard: str
    roles: dict[str, str]  # node id → role, removed nodes included
    handles: dict[str, Any]  # role → ray._private.node.Node, live nodes only

    def role(self, node_id: str | None) -> str:
        return self.roles.get(node_id, "?") if node_id else "-"


@dataclass
class Corpus:
    root: Path
    n_objects: int
    reference: subprocess.Popen  # the single-node run of the same job (its own local Ray)
    reference_db: Path

    def reference_chunks(self) -> dict[str, dict]:
        if self.reference.returncode is None:
            out, _ = self.reference.communicate(timeout=JOB_TIMEOUT_S)
            log = self.reference_db.with_suffix(".log").read_text()
            assert self.reference.returncode == 0, log[-3000:]
            print(f"single-node reference run: {json.loads(out)['chunks']} chunks")
        return {r["chunk_id"]: r for r in _rows(self.reference_db, schema.CHUNKS)}


@dataclass
class Placement:
    """Tasks (one entry per attempt) and actors of one run: name, node role, state."""

    tasks: list[dict]
    actors: list[dict]

    def nodes_of(self, stage: str, kind: str = "tasks") -> Counter:
        return Counter(e["node"] for e in getattr(self, kind) if stage in e["name"])


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_corpus(root: Path) -> int:
    good, _ = mixed_corpus()
    files = {k: v for k, v in good.items() if not k.endswith(".pdf")}  # no OCR: kept quick
    files |= good_images()
    for n in range(EXTRA_IMAGES):
        files[f"more/p{n:02d}.png"] = encode(pattern(100 + n), "PNG")
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return len(files)


def _config(db: Path) -> MragConfig:
    """The job on the cluster: the model actor asks for the "GPU"."""
    return load_config(
        profile="offline",
        overrides={
            "db_uri": str(db),
            **JOB_SETTINGS,
            "ingest.embed_actors": 1,
            "ingest.embed_resources": {ACCEL: 1},
        },
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    """The corpus, and the single-node reference run of it, started at once: it runs (as a user
    runs ``mrag ingest``, with its own local Ray) while the cluster starts."""
    root = tmp_path_factory.mktemp("multinode")
    media = root / "media"
    n_objects = _write_corpus(media)
    reference_db = root / "single-node-db"
    args = [mrag_command(), "ingest", str(media), "--db", str(reference_db), "--json",
            "--profile", "offline"]  # fmt: skip
    for key, value in JOB_SETTINGS.items():
        args += ["--set", f"{key}={value}"]
    with reference_db.with_suffix(".log").open("w") as log:  # Ray's chatter: never blocks it
        process = subprocess.Popen(
            args, env=user_env(), stdout=subprocess.PIPE, stderr=log, text=True
        )
    yield Corpus(media, n_objects, process, reference_db)
    stop_tree(process)  # only when a test failed before the run was waited for


@pytest.fixture(scope="module")
def nodes(corpus: Corpus) -> Nodes:
    """A head and two workers on 127.0.0.1 (dashboard on the head), this process the driver.

    No other Ray may be connected in this process: the session's local Ray (``ray_local``),
    when an earlier module started it, is shut down for this module and started again after.
    """
    import ray
    from ray.cluster_utils import Cluster

    from mrag.ray_runtime import init_ray

    had_local_ray = ray.is_initialized()
    ray.shutdown()
    port = _free_port()
    cpus, _ = NODES[HEAD]
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": cpus,
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": port,
        },
    )
    handles = {HEAD: cluster.head_node}
    try:
        for role in (CPU_WORKER, ACCEL_WORKER):
            cpus, resources = NODES[role]
            handles[role] = cluster.add_node(num_cpus=cpus, resources=resources)
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        roles = {handle.node_id: role for role, handle in handles.items()}
        yield Nodes(cluster, f"http://127.0.0.1:{port}", roles, handles)
    finally:
        ray.shutdown()
        cluster.shutdown()
        if had_local_ray:
            init_ray(num_cpus=2)  # as conftest's ray_local made it


@pytest.fixture(scope="module")
def cluster_run(nodes: Nodes, corpus: Corpus, tmp_path_factory) -> tuple[Any, Path, Placement]:
    """The job run once on the cluster: its summary, database and placement."""
    from mrag.pipelines.ingest import run_ingest

    db = tmp_path_factory.mktemp("cluster") / "db"
    before = _seen(nodes)
    started = time.perf_counter()
    summary = run_ingest(_config(db), [str(corpus.root)], progress=False)
    print(f"\ncluster run ({time.perf_counter() - started:.1f} s): {summary.render()}")
    placement = _placement(nodes, before)
    _print_placement(nodes, placement)
    return summary, db, placement


def test_ingest_places_stages_by_resource(nodes: Nodes, corpus: Corpus, cluster_run) -> None:
    """The embedding actor only where ``accel`` is, decode tasks on several nodes, and the
    tables the single-node run made (chunk ids and vectors, each object once)."""
    summary, db, placement = cluster_run
    _assert_loopback_only(nodes)
    assert summary.ingested == corpus.n_objects, summary.render()
    assert placement.nodes_of(EMBED, "actors") == {ACCEL_WORKER: 1}, placement.actors
    assert set(placement.nodes_of(EMBED)) - {"-"} == {ACCEL_WORKER}  # the actor's calls
    decode_nodes = placement.nodes_of(DECODE)
    assert len(decode_nodes) >= 2, decode_nodes
    # More decode tasks than run at once: the nodes were chosen task by task, many times.
    assert decode_nodes.total() > 3 * JOB_SETTINGS["ingest.decode_tasks"], decode_nodes
    _assert_same_tables(db, corpus)


def test_serve_places_models_on_accel_nodes(nodes: Nodes, corpus: Corpus, cluster_run) -> None:
    """With ``serve.model_resources``, the encoder, reranker and generator replicas run on the
    ``accel`` node, the ingress and retriever wherever Ray puts them; a search over HTTP on
    127.0.0.1 finds an ingested picture."""
    from ray import serve

    from mrag.pipelines.index import build_indices
    from mrag.serve.runner import run_server

    _, db, _ = cluster_run
    port = _free_port()
    config = load_config(
        profile="offline",
        overrides={"db_uri": str(db), "serve.port": port, "serve.model_resources": {ACCEL: 0.1}},
    )
    build_indices(Store(str(db)), config.index)  # the full-text index hybrid search needs
    before = _seen(nodes)
    # One HTTP proxy, on the head: every node of this cluster has the address 127.0.0.1.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    try:
        url = run_server(config, blocking=False)
        assert url == f"http://127.0.0.1:{port}"
        picture = good_images()["photos/c.png"]
        response = httpx.post(
            f"{url}/v1/search",
            json={"image": base64.b64encode(picture).decode(), "k": 3},
            timeout=60,
        )
        placement = _placement(nodes, before)
        _assert_loopback_only(nodes)
    finally:
        serve.shutdown()
    _print_placement(nodes, placement)
    assert response.status_code == 200, response.text
    assert response.json()["hits"][0]["uri"] == str(corpus.root / "photos/c.png")
    replicas = {
        a["name"].removeprefix("ServeReplica:mrag:"): a["node"]
        for a in placement.actors
        if a["name"].startswith("ServeReplica:mrag:")
    }
    assert {d: replicas.get(d) for d in MODEL_DEPLOYMENTS} == dict.fromkeys(
        MODEL_DEPLOYMENTS, ACCEL_WORKER
    ), replicas
    assert replicas.get(INGRESS) in NODES, replicas


def test_worker_removed_mid_job(nodes: Nodes, corpus: Corpus, tmp_path: Path, monkeypatch) -> None:
    """The CPU worker is removed after the job's first commit, the moment one of the job's
    tasks runs there (a fragment writer, as a rule; the test prints which): the job finishes on
    the other two nodes, and the tables are the single-node run's, every object exactly once.

    Only a task running there can be lost: what a finished task returned (receipts, decoded
    rows of this size) is small enough that Ray has already handed it to its owner."""
    from mrag.pipelines import ingest
    from mrag.pipelines.ingest import run_ingest

    _assert_loopback_only(nodes)
    before = _seen(nodes)
    worker = nodes.handles[CPU_WORKER]
    started = time.perf_counter()
    removal: dict[str, Any] = {}

    class RemovesWorkerAfterFirstCommit(ingest.Committer):
        """Removes the worker inside the driver's first commit of chunk rows (the driver takes
        no receipt meanwhile; Ray Data's executor goes on)."""

        def commit(self) -> list[dict[str, Any]]:
            finished = super().commit()
            if not removal and any(c.table == schema.CHUNKS for c in self.commits):
                removal["committed"] = _committed_chunks(db)
                removal["killed"] = _wait_for_running_task(worker)
                removal["at_s"] = time.perf_counter() - started
                nodes.cluster.remove_node(worker)
                del nodes.handles[CPU_WORKER]
            return finished

    monkeypatch.setattr(ingest, "Committer", RemovesWorkerAfterFirstCommit)
    db = tmp_path / "db"
    summary = run_ingest(_config(db), [str(corpus.root)], progress=False)
    with open(summary.report_uri) as report:
        driver = json.load(report)["driver"]
    print(
        f"\nremoved {CPU_WORKER} {removal['at_s']:.1f} s into the job, "
        f"{removal['committed']}/{corpus.n_objects} chunks committed, while running there: "
        f"{removal['killed'] or 'nothing'}\njob finished ({time.perf_counter() - started:.1f} s):"
        f" {summary.render()}; driver: {driver}"
    )
    placement = _placement(nodes, before)
    _print_placement(nodes, placement)
    _assert_loopback_only(nodes)
    assert removal["committed"] < corpus.n_objects  # the node went mid-job
    assert summary.ingested == corpus.n_objects, summary.render()
    _assert_same_tables(db, corpus)
    redone = [t for t in placement.tasks if t["attempt"] > 0 or t["state"] == "FAILED"]
    print(f"task attempts failed or redone: {redone}")


def _wait_for_running_task(node: Any, timeout_s: float = 5.0) -> list[str]:
    """Waits (up to ``timeout_s``) until a Ray Data task runs in one of the node's workers;
    returns the running tasks' names. Read from the workers' process titles ("ray::<task>",
    "ray::IDLE"), which change the moment a task starts, where the state API lags a second."""
    import psutil

    (raylet,) = node.all_processes["raylet"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            workers = psutil.Process(raylet.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        running = []
        for worker in workers:
            try:
                title = " ".join(worker.cmdline())
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            if title.startswith("ray::MapBatches("):
                running.append(title.removeprefix("ray::").strip())
        if running:
            return running
        time.sleep(0.01)
    return []


def _assert_loopback_only(nodes: Nodes) -> None:
    """Every live node advertises a loopback address, and every process of every node (GCS,
    raylets, object stores, dashboard, workers) listens on loopback only."""
    import ray

    addresses = {n["NodeID"][:8]: n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
    assert len(addresses) == len(nodes.handles), addresses
    assert all(is_loopback(a) for a in addresses.values()), addresses
    listeners: set[tuple[str, str, int]] = set()
    for handle in nodes.handles.values():
        for infos in handle.all_processes.values():
            for info in infos:
                listeners |= tcp_listeners(info.process.pid)
    assert listeners
    assert not_on_loopback(listeners) == []


def _assert_same_tables(db: Path, corpus: Corpus) -> None:
    """The single-node run's chunks (ids, uris, vectors), no chunk twice, one assets row per
    object."""
    chunks = _rows(db, schema.CHUNKS)
    ids = Counter(r["chunk_id"] for r in chunks)
    assert {k: n for k, n in ids.items() if n > 1} == {}
    expected = corpus.reference_chunks()
    assert set(ids) == set(expected)
    for row in chunks:
        want = expected[row["chunk_id"]]
        assert (row["uri"], row["modality"]) == (want["uri"], want["modality"])
        for column in ("clip", "text_vec"):
            if want[column] is None:
                assert row[column] is None, (row["chunk_id"], column)
            else:
                np.testing.assert_allclose(row[column], want[column], atol=1e-5)
    assets = Counter(r["uri"] for r in _rows(db, schema.ASSETS))
    assert len(assets) == corpus.n_objects
    assert set(assets.values()) == {1}
    assert _rows(db, schema.ERRORS) == []


def _rows(db: Path, name: str) -> list[dict]:
    table = Store(str(db)).open(name)
    return [] if table is None else table.to_lance().to_table().to_pylist()


def _committed_chunks(db: Path) -> int:
    try:
        return Store(str(db)).count_rows(schema.CHUNKS)
    except Exception:  # the tables are being created: the next poll sees them
        return 0


def _seen(nodes: Nodes) -> set[tuple[str, int] | str]:
    """Every task attempt and actor the state API knows of now."""
    from ray.util.state import list_actors, list_tasks

    options = {"address": nodes.dashboard, "limit": 10_000, "raise_on_missing_output": False}
    return {(t.task_id, t.attempt_number) for t in list_tasks(**options)} | {
        a.actor_id for a in list_actors(**options)
    }


def _placement(nodes: Nodes, before: set) -> Placement:
    """The task attempts and actors that appeared since ``before``, with their nodes' roles."""
    from ray.util.state import list_actors, list_tasks

    options = {"address": nodes.dashboard, "limit": 10_000, "raise_on_missing_output": False}
    tasks = [
        {
            "name": t.name,
            "node": nodes.role(t.node_id),
            "state": t.state,
            "attempt": t.attempt_number,
        }
        for t in list_tasks(detail=True, **options)
        if (t.task_id, t.attempt_number) not in before
    ]
    actors = [
        {"name": a.class_name, "node": nodes.role(a.node_id), "state": a.state, "id": a.actor_id}
        for a in list_actors(detail=True, **options)
        if a.actor_id not in before
    ]
    return Placement(tasks, actors)


def _print_placement(nodes: Nodes, placement: Placement) -> None:
    """The nodes; per task name, the attempts on each node (with how many failed or were
    retries); every actor and its node. Ray Data's bookkeeping actors and calls left out."""
    tasks = [t for t in placement.tasks if not t["name"].startswith(RAY_BOOKKEEPING)]
    actors = [a for a in placement.actors if not a["name"].startswith(RAY_BOOKKEEPING)]
    print("nodes:")
    for node_id, role in nodes.roles.items():
        cpus, resources = NODES[role]
        gone = "" if role in nodes.handles else "  (removed)"
        print(f"  {role:<13} {node_id[:8]}  CPU {cpus}  {resources or ''}{gone}")
    width = max([len(e["name"]) for e in tasks + actors] + [10])
    columns = [*NODES, *(["-"] if any(t["node"] == "-" for t in tasks) else [])]
    if tasks:
        print("task attempts per node ('-': no node, as for an actor's creation task):")
        print("  " + " " * width + "".join(f"{c:>18}" for c in columns))
        for name in sorted({t["name"] for t in tasks}):
            cells = []
            for column in columns:
                here = [t for t in tasks if (t["name"], t["node"]) == (name, column)]
                notes = [f"{n} {label}" for label, n in (
                    ("failed", sum(t["state"] == "FAILED" for t in here)),
                    ("retries", sum(t["attempt"] > 0 for t in here)),
                ) if n]  # fmt: skip
                cells.append(f"{len(here)}" + (f" ({', '.join(notes)})" if notes else ""))
            print(f"  {name:<{width}}" + "".join(f"{c:>18}" for c in cells))
    print("actors:")
    for actor in sorted(actors, key=lambda a: (a["name"], a["node"], a["id"])):
        print(
            f"  {actor['name']:<{width}}  {actor['node']:<13} {actor['state']:<6} {actor['id'][:8]}"
        )
