"""Shared fixtures that own real components: a moto S3 server on 127.0.0.1 and a local Ray.

Environment is fixed before anything imports Ray, so every Ray worker inherits the same S3
endpoint, offline model settings and cache folders (tests never touch the network or $HOME).
"""

from __future__ import annotations

import itertools
import os
import socket
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="mrag-tests-"))
os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HOME": str(_SESSION_DIR / "hf-home"),
        "MRAG_CACHE_DIR": str(_SESSION_DIR / "mrag-cache"),
        "MRAG_PROFILE": "offline",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
os.environ.pop("MRAG_API_TOKEN", None)


_BUCKET_SEQ = itertools.count()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """moto's S3 server (the real S3 HTTP API) on loopback; AWS_* variables point at it."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ["AWS_ALLOW_HTTP"] = "true"
    yield endpoint
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket per test; returns its name."""
    import re

    import boto3

    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    name = f"t{next(_BUCKET_SEQ)}-{slug}"
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_local(s3_endpoint: str):
    """One loopback-only local Ray for the session (started after the S3 endpoint is known)."""
    import ray

    from mrag.ray_runtime import init_ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()
