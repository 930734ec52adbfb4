"""``mrag serve``: the search API on a local (or joined) Ray, in this process.

Safe by default: the HTTP proxy binds ``serve.host`` (127.0.0.1 unless told otherwise) and
refuses to start on any other address without a token (``MRAG_API_TOKEN``). It stops cleanly on
SIGTERM or Ctrl-C (:mod:`mrag.serve.shutdown`): new requests are refused, those in flight get
``serve.shutdown_grace_s`` to finish, then Serve and the Ray that mrag started shut down and
the command exits 0 with one line saying so.

Send the signal to ``mrag serve`` itself (Kubernetes does: the container's main process;
systemd: ``KillMode=mixed``). Ray's own daemons (raylet, GCS) run in ``mrag serve``'s process
group and stop at once on a SIGTERM of their own, so a SIGTERM to the whole group still ends
in a clean exit, but cuts off the requests in flight. Ctrl-C reaches the group too; Ray's
daemons ignore SIGINT, so requests in flight finish.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING

from mrag.errors import MragError
from mrag.serve.builder import APP_NAME, TOKEN_ENV, build_app, env_token
from mrag.serve.shutdown import (
    ServeStopped,
    StopRequested,
    StopSignals,
    all_running,
    drain_ingress,
    ray_daemons,
    shut_down,
    start_coordinator,
)

if TYPE_CHECKING:
    from mrag.config import MragConfig

log = logging.getLogger(__name__)


def is_loopback_host(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1, IPv4-mapped). Any other name may
    resolve anywhere, so it counts as exposed."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def check_exposure(host: str, token: str | None) -> None:
    """Refuses to serve a non-loopback address without a bearer token.

    Raises:
        MragError: ``host`` is reachable from other machines and ``token`` is empty.
    """
    if token or is_loopback_host(host):
        return
    raise MragError(
        f"refusing to serve on {host} without a token: anyone who can reach it could read the "
        f"corpus. Set {TOKEN_ENV} (clients then send 'Authorization: Bearer <token>'), or keep "
        "serve.host on 127.0.0.1 behind a proxy of your own"
    )


def run_server(config: MragConfig, *, blocking: bool = True) -> str:
    """Starts (or joins) Ray, starts Serve on ``serve.host:serve.port`` and deploys the app.

    Returns the base URL. With ``blocking`` it serves until SIGTERM or Ctrl-C and then stops
    cleanly (:func:`serve_until_stopped`); without, it returns once the application is running
    and Serve keeps running in the Ray instance (callers own ``serve.shutdown()``).

    Raises:
        MragError: a non-loopback ``serve.host`` without ``MRAG_API_TOKEN``.
    """
    if blocking:
        serve_until_stopped(config)
        return _base_url(config)
    from ray import serve

    from mrag.ray_runtime import init_ray

    check_exposure(config.serve.host, env_token())
    init_ray(config.ray_address)
    serve.start(http_options={"host": config.serve.host, "port": config.serve.port})
    serve.run(build_app(config), name=APP_NAME, route_prefix="/")
    print(f"mrag API ready: {_where(config)}", flush=True)
    return _base_url(config)


def serve_until_stopped(config: MragConfig) -> ServeStopped:
    """``mrag serve``: serves until SIGTERM or Ctrl-C, then drains and shuts down (the module
    docstring has the sequence). Call from the main thread: it owns the signal handlers.

    Returns:
        What became of the requests in flight; ``render()`` is the line to end with.

    Raises:
        MragError: a non-loopback ``serve.host`` without ``MRAG_API_TOKEN``.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("serve_until_stopped handles signals: call it from the main thread")
    check_exposure(config.serve.host, env_token())
    local_ray = not (config.ray_address or os.environ.get("RAY_ADDRESS")) and not _ray_running()
    signals = StopSignals()
    signals.install()
    daemons: list = []
    finished = cut_off = 0
    stopping_since = None
    try:
        from ray import serve

        from mrag.ray_runtime import init_ray

        init_ray(config.ray_address)
        signals.install()  # ray.init put Ray's own handlers (exit status 15, a stack dump) in
        if local_ray:
            daemons = ray_daemons()
        serve.start(http_options={"host": config.serve.host, "port": config.serve.port})
        coordinator = start_coordinator()
        application = build_app(config, drain_coordinator=coordinator)
        print(f"mrag API starting: {_where(config)}", flush=True)
        serve.run(application, name=APP_NAME, route_prefix="/")
        signals.serving()
        print("mrag API ready; SIGTERM or Ctrl-C stops it", flush=True)
        signals.wait()
        stopping_since = time.monotonic()
        finished, cut_off = drain_ingress(
            coordinator,
            config.serve.shutdown_grace_s,
            signals.hurry,
            ray_up=lambda: all_running(daemons),
        )
    except StopRequested:
        pass
    except BaseException:
        shut_down(local_ray=local_ray, daemons=daemons)
        raise
    during_start_up = stopping_since is None
    if during_start_up:
        stopping_since = time.monotonic()
    ray_lost = not all_running(daemons)
    note = shut_down(local_ray=local_ray, daemons=daemons)
    return ServeStopped(
        signal=signals.name,
        finished=finished,
        cut_off=cut_off,
        seconds=time.monotonic() - stopping_since,
        during_start_up=during_start_up,
        ray_lost=ray_lost and not during_start_up,
        note=note,
    )


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def _base_url(config: MragConfig) -> str:
    return f"http://{config.serve.host}:{config.serve.port}"


def _where(config: MragConfig) -> str:
    url = _base_url(config)
    return (
        f"page {url}/, POST {url}/v1/search and {url}/v1/answer "
        f"(docs: {url}/docs, health: {url}/healthz)"
    )
