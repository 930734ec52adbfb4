"""Fault injection with real processes and real signals: the installed ``mrag ingest`` killed
mid-job (the driver, then the embedding actor), and what the next run makes of it.

Each test prints what it killed and when (``pytest -s`` shows it).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import pytest

from mrag.store import schema
from mrag.store.lance import Store
from tests.doc_media import mixed_corpus
from tests.media import good_images
from tests.processes import mrag_command, user_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORDS = "river mountain bread engine violin harbor lantern orchard comet glacier".split()
JOB_TIMEOUT_S = 600


def _write_corpus(root: Path) -> int:
    """Multi-chunk documents (a few chunks each), PDFs, bad documents and images."""
    good, bad = mixed_corpus()
    files = {**good, **{k: v for k, (v, _) in bad.items()}, **good_images()}
    rng = random.Random(0)
    for d in range(60):
        paragraphs = [
            " ".join(rng.choice(WORDS) for _ in range(90)).capitalize() + "." for _ in range(6)
        ]
        files[f"docs/long/article-{d:02d}.txt"] = "\n\n".join(paragraphs).encode()
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return len(files)


def _ingest(corpus: Path | str, db: Path, **env: str) -> subprocess.Popen:
    args = [
        mrag_command(), "ingest", str(corpus), "--db", str(db), "--profile", "offline",
        "--set", "ingest.write_batch_rows=8", "--set", "index.auto_after_ingest=false",
        "--json",
    ]  # fmt: skip
    return subprocess.Popen(
        args, env=user_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process: subprocess.Popen) -> tuple[dict, str]:
    out, err = process.communicate(timeout=JOB_TIMEOUT_S)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out), err


def _rows(db: Path, name: str) -> list[dict]:
    store = Store(str(db))
    table = store.open(name)
    return [] if table is None else table.to_lance().to_table().to_pylist()


def _counts(db: Path) -> tuple[int, int]:
    try:
        store = Store(str(db))
        return store.count_rows(schema.CHUNKS), store.count_rows(schema.ASSETS)
    except Exception:  # tables being created; the next poll sees them
        return 0, 0


def _kill_tree(process: subprocess.Popen, children: list[psutil.Process]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()
    _, alive = psutil.wait_procs(children, timeout=5)
    for child in alive:
        child.kill()
    psutil.wait_procs(alive, timeout=10)


def _assert_same_database(db: Path, reference: Path) -> None:
    chunks = _rows(db, schema.CHUNKS)
    ids = [r["chunk_id"] for r in chunks]
    duplicates = {k: n for k, n in Counter(ids).items() if n > 1}
    print(f"{db.name}: {len(ids)} chunk rows, {len(duplicates)} duplicate chunk_ids")
    assert duplicates == {}
    expected = {r["chunk_id"]: r for r in _rows(reference, schema.CHUNKS)}
    assert set(ids) == set(expected)
    for row in chunks:
        want = expected[row["chunk_id"]]
        assert (row["uri"], row["text"], row["page"]) == (want["uri"], want["text"], want["page"])
        for column in ("clip", "text_vec"):
            if want[column] is None:
                assert row[column] is None
            else:
                np.testing.assert_allclose(row[column], want[column], atol=1e-4)

    def by_uri(name: str, columns: tuple[str, ...]) -> dict:
        return {r["uri"]: tuple(r[c] for c in columns) for r in _rows(db, name)}

    def by_uri_ref(name: str, columns: tuple[str, ...]) -> dict:
        return {r["uri"]: tuple(r[c] for c in columns) for r in _rows(reference, name)}

    assert len(_rows(db, schema.ASSETS)) == len(by_uri(schema.ASSETS, ("uri",)))
    for name, columns in (
        (schema.ASSETS, ("status", "n_chunks", "fingerprint", "asset_id")),
        (schema.ERRORS, ("error_class", "stage")),
    ):
        assert by_uri(name, columns) == by_uri_ref(name, columns)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path, int]:
    """The corpus and a database from one uninterrupted run of it."""
    root = tmp_path_factory.mktemp("faults")
    n_objects = _write_corpus(root / "corpus")
    summary, err = _finish(_ingest(root / "corpus", root / "reference"))
    assert summary["seen"] == n_objects and summary["commits"] > 3
    # Progress reached stderr although it is a pipe, and the run report sits beside the tables.
    assert "mrag ingest:" in err and "chunks/s" in err and "ETA" in err
    report = json.loads(Path(summary["report_uri"]).read_text())
    assert report["summary"]["chunks"] == summary["chunks"]
    assert len(report["commits"]) == summary["commits"]
    assert report["models"]["clip"]["weights_id"] and report["versions"]["lancedb"]
    assert report["errors_by_class"] == {"BinaryContent": 1, "CorruptPDF": 1, "EncryptedPDF": 1}
    first, total = summary["first_commit_s"], summary["elapsed_s"]
    print(f"reference: {summary['chunks']} chunks of {n_objects} objects, "
          f"first commit after {first:.1f} s of {total:.1f} s")  # fmt: skip
    return root / "corpus", root / "reference", n_objects


def test_driver_killed_mid_job_then_rerun_gives_the_uninterrupted_rows(corpus, tmp_path) -> None:
    source, reference, n_objects = corpus
    db = tmp_path / "db"
    # The driver pauses 0.5 s after each commit, so the kill lands between two commits even
    # on a fast machine (the job's commits otherwise fall within its last second).
    process = _ingest(source, db, MRAG_FAULT_COMMIT_DELAY_S="0.5")
    started = time.monotonic()
    chunks = assets = 0
    while process.poll() is None and time.monotonic() - started < JOB_TIMEOUT_S:
        chunks, assets = _counts(db)
        if chunks > 0 and assets < n_objects - 10:  # some work committed, much still to do
            break
        time.sleep(0.2)
    assert process.poll() is None, "the job ended before anything could be killed"
    children = psutil.Process(process.pid).children(recursive=True)
    os.kill(process.pid, signal.SIGKILL)
    killed_at = time.monotonic() - started
    _kill_tree(process, children)
    chunks, assets = _counts(db)
    half_done = {r["uri"] for r in _rows(db, schema.CHUNKS)} - {
        r["uri"] for r in _rows(db, schema.ASSETS)
    }
    print(f"SIGKILL to the driver (pid {process.pid}) {killed_at:.1f} s into the job: "
          f"{chunks} chunks and {assets} assets rows committed, {len(half_done)} objects with "
          f"chunks but no assets row")  # fmt: skip
    assert assets < n_objects

    summary, _ = _finish(_ingest(source, db))
    assert summary["skipped"] == assets  # exactly the objects marked done
    _assert_same_database(db, reference)


def _embed_actor(driver: subprocess.Popen) -> psutil.Process | None:
    try:
        processes = psutil.Process(driver.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for process in processes:
        try:
            if "EmbedStage" in " ".join(process.cmdline()) or "EmbedStage" in process.name():
                return process
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return None


def test_embedding_actor_killed_mid_job_still_ingests_every_object_once(corpus, tmp_path) -> None:
    source, reference, n_objects = corpus
    db = tmp_path / "db"
    process = _ingest(source, db, MRAG_FAULT_COMMIT_DELAY_S="0.5")  # see the driver test
    started = time.monotonic()
    actor = None
    while process.poll() is None and time.monotonic() - started < JOB_TIMEOUT_S:
        chunks, assets = _counts(db)
        if chunks > 0 and assets < n_objects - 10:
            actor = _embed_actor(process)
            if actor is not None:
                break
        time.sleep(0.2)
    assert actor is not None, "no embedding actor found while the job ran"
    actor.send_signal(signal.SIGKILL)
    killed_at = time.monotonic() - started
    print(f"SIGKILL to the embedding actor (pid {actor.pid}) {killed_at:.1f} s into the job, "
          f"{chunks} chunks committed")  # fmt: skip
    summary, _ = _finish(process)
    assert summary["seen"] == n_objects and summary["skipped"] == 0
    _assert_same_database(db, reference)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_s3_server_down_for_seconds_mid_job_then_every_object_lands(tmp_path) -> None:
    """Its own moto server (the session's is shared), stopped once the job has listed the bucket
    and started Ray, i.e. while decode tasks read; restarted 4 s later on the same port (moto
    keeps its objects in this process)."""
    import boto3
    from moto.server import ThreadedMotoServer

    from tests.media import encode, pattern

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="outage-corpus")
        keys = [f"photos/p{i:03d}.jpg" for i in range(40)]
        for i, key in enumerate(keys):
            s3.put_object(Bucket="outage-corpus", Key=key, Body=encode(pattern(100 + i), "JPEG"))
        for key, data in mixed_corpus()[0].items():
            s3.put_object(Bucket="outage-corpus", Key=key, Body=data)
            keys.append(key)
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}
        db = tmp_path / "db"
        process = _ingest("s3://outage-corpus/", db, **env)
        started = time.monotonic()
        while process.poll() is None and time.monotonic() - started < JOB_TIMEOUT_S:
            names = []
            for child in psutil.Process(process.pid).children(recursive=True):
                try:
                    names.append(child.name())
                except psutil.Error:
                    continue
            if any("raylet" in n for n in names):
                break
            time.sleep(0.1)
        server.stop()
        stopped_at = time.monotonic() - started
        time.sleep(4)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        print(f"S3 server stopped {stopped_at:.1f} s into the job (Ray up), restarted 4 s later; "
              f"{_counts(db)[0]} chunks committed by then")  # fmt: skip
        first, err = _finish(process)
        errors = _rows(db, schema.ERRORS)
        print(f"first run: {first['chunks']} chunks, failed {first['failed']}; "
              f"{len(errors)} error rows")  # fmt: skip
        _finish(_ingest("s3://outage-corpus/", db, **env))
        assets = {r["uri"]: r["status"] for r in _rows(db, schema.ASSETS)}
        assert assets == {f"s3://outage-corpus/{k}": "ok" for k in keys}
        assert _rows(db, schema.ERRORS) == []
        ids = [r["chunk_id"] for r in _rows(db, schema.CHUNKS)]
        assert len(ids) == len(set(ids)) and {r["uri"] for r in _rows(db, schema.CHUNKS)} == set(
            assets
        )
    finally:
        server.stop()


def test_writer_killed_mid_fragment_then_maintenance_removes_its_files(corpus, tmp_path) -> None:
    """A fragment writer kills its own process (SIGKILL) after handing Lance its first record
    batch: Ray runs the task again, the job ends with every row once, and the half-written
    file that no version references is what ``mrag index --maintain`` removes."""
    from mrag.store.orphans import referenced_files

    source, reference, _ = corpus
    db = tmp_path / "db"
    marker = tmp_path / "writer-killed"
    summary, _ = _finish(_ingest(source, db, MRAG_FAULT_KILL_WRITER_ONCE=str(marker)))
    assert marker.exists(), "no writer claimed the fault"
    _assert_same_database(db, reference)

    def unreferenced() -> dict[str, int]:
        counts = {}
        store = Store(str(db))
        for name in (schema.CHUNKS, schema.ERRORS):
            dataset = store.open(name).to_lance()
            files = set(os.listdir(os.path.join(dataset.uri, "data")))
            counts[name] = len(files - referenced_files(dataset))
        return counts

    left = unreferenced()
    print(f"writer killed mid-fragment: job ended with {summary['chunks']} chunks; "
          f"unreferenced data files left: {left}")  # fmt: skip
    maintained = subprocess.run(
        [mrag_command(), "index", "--db", str(db), "--profile", "offline", "--maintain",
         "--keep-versions-hours", "0"],
        env=user_env(), capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    assert maintained.returncode == 0, maintained.stderr[-2000:]
    assert "orphan_files_removed" in maintained.stdout
    assert unreferenced() == {schema.CHUNKS: 0, schema.ERRORS: 0}
    _assert_same_database(db, reference)
