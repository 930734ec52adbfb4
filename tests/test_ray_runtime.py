"""A Ray that mrag starts itself: loopback only, token auth on, workers share our environment."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request

import psutil
import pytest

from tests.media import good_images
from tests.processes import (
    is_loopback,
    mrag_command,
    not_on_loopback,
    stop_tree,
    tcp_listeners,
    user_env,
)

pytestmark = pytest.mark.integration


def test_every_ray_process_listens_on_loopback_only(ray_local) -> None:
    ray_processes = psutil.Process().children(recursive=True)
    listening = [conn.laddr.ip for process in ray_processes for conn in _tcp_listeners(process)]
    assert listening, "Ray started no listening sockets?"
    assert all(is_loopback(ip) for ip in listening), listening
    assert {node["NodeManagerAddress"] for node in ray_local.nodes()} == {"127.0.0.1"}


def test_token_auth_stays_on(ray_local) -> None:
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    assert is_token_auth_enabled()


def test_workers_inherit_the_drivers_environment(ray_local) -> None:
    """No runtime_env for a local Ray (so prestarted workers are used): the S3 endpoint and the
    model cache must still reach every worker."""

    @ray_local.remote(num_cpus=0.1)
    def worker_env() -> tuple[str | None, str | None]:
        return os.environ.get("AWS_ENDPOINT_URL"), os.environ.get("MRAG_CACHE_DIR")

    expected = (os.environ["AWS_ENDPOINT_URL"], os.environ["MRAG_CACHE_DIR"])
    assert ray_local.get(worker_env.remote()) == expected


def _tcp_listeners(process: psutil.Process) -> list:
    try:
        return [c for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


@pytest.mark.slow
def test_mrag_serve_listens_on_loopback_only(ray_local, tmp_path) -> None:
    """`mrag serve` as a user starts it: its Ray, Serve's proxy and every worker on loopback."""
    from mrag.config import load_config
    from mrag.pipelines.ingest import run_ingest

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for rel, data in list(good_images().items())[:2]:
        (corpus / os.path.basename(rel)).write_bytes(data)
    db = str(tmp_path / "db")
    run_ingest(load_config(profile="offline", overrides={"db_uri": db}), [str(corpus)])

    port = _free_port()
    process = subprocess.Popen(
        [mrag_command(), "serve", "--db", db, "--profile", "offline", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=user_env(),
    )  # fmt: skip
    try:
        _wait_healthy(process, f"http://127.0.0.1:{port}/healthz", timeout_s=180)
        listeners = tcp_listeners(process.pid)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/search",
            data=json.dumps({"query": "a photo", "k": 1}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            assert len(json.load(response)["hits"]) == 1
    finally:
        stop_tree(process)
    assert any(port == p for _, _, p in listeners), listeners  # the HTTP proxy was seen
    assert not_on_loopback(listeners) == []


def _wait_healthy(process: subprocess.Popen, url: str, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"mrag serve exited: {process.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not healthy after {timeout_s} s")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_api_token_is_never_forwarded_to_a_cluster(monkeypatch) -> None:
    from mrag.ray_runtime import forwarded_env

    monkeypatch.setenv("MRAG_API_TOKEN", "s3cret")
    monkeypatch.setenv("MRAG_CONFIG", "job.yaml")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    env = forwarded_env()
    assert env["MRAG_CONFIG"] == "job.yaml" and env["AWS_REGION"] == "eu-west-1"
    assert "MRAG_API_TOKEN" not in env and "s3cret" not in env.values()
