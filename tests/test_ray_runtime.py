"""A Ray that mrag starts itself: loopback only, token auth on, workers share our environment."""

from __future__ import annotations

import ipaddress
import os

import psutil
import pytest

pytestmark = pytest.mark.integration


def test_every_ray_process_listens_on_loopback_only(ray_local) -> None:
    ray_processes = psutil.Process().children(recursive=True)
    listening = [conn.laddr.ip for process in ray_processes for conn in _tcp_listeners(process)]
    assert listening, "Ray started no listening sockets?"
    assert all(_is_loopback(ip) for ip in listening), listening
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


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def _tcp_listeners(process: psutil.Process) -> list:
    try:
        return [c for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
