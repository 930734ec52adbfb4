"""Starting or joining Ray for mrag's entry points (CLI, pipelines, Serve, tests).

A Ray instance mrag starts itself listens on 127.0.0.1 only and keeps Ray's token auth on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

# Forwarded to every worker so S3, model caches and offline mode behave as on the driver.
_FORWARDED_ENV_PREFIXES = ("AWS_", "HF_", "MRAG_", "TRANSFORMERS_", "TOKENIZERS_")
# Never forwarded: Ray records a job's runtime_env (logs, dashboard); the Serve ingress gets the
# API token as an argument instead.
_SECRET_ENV = frozenset({"MRAG_API_TOKEN"})
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def forwarded_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if k.startswith(_FORWARDED_ENV_PREFIXES) and k not in _SECRET_ENV
    }


def loopback_only_ray() -> None:
    """Makes a Ray that this process starts bind 127.0.0.1 only (GCS, raylet, workers, agents).

    Ray 2.60 reads ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` once, when ``ray`` is first imported
    (``ray._private.ray_constants.ENABLE_RAY_CLUSTER``); measured: without it a local instance
    binds ``0.0.0.0`` and the machine's address. So the variable is set before the import, and
    when something imported Ray earlier (a notebook, a library) the constant it already read is
    corrected too. Child processes (gcs_server, raylet, workers) inherit the variable. A user who
    set the variable explicitly keeps their choice.
    """
    os.environ.setdefault(_LOOPBACK_ENV, "0")
    enabled = os.environ[_LOOPBACK_ENV].strip().lower() in ("1", "true", "yes")
    if "ray" in sys.modules:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = enabled


def bind_serve_replica_to_node_address() -> None:
    """Makes this Serve replica's inter-deployment gRPC server listen on the node's address only.

    Ray Serve 2.60 binds that server to ``[::]:0`` (every interface) in each replica, with no
    setting to change it (upstream: ray-project/ray PR 59908 added it, PR 64623 proposes port
    settings, none a host). Peers reach a replica at its node's address, which on a loopback-only
    local Ray is 127.0.0.1. Call it first in a deployment's ``__init__``: Serve starts the server
    right after the constructor returns. There is no public API for this, hence the private one.
    """
    import ray
    from ray.serve._private import replica

    node_address = ray.util.get_node_ip_address()
    host = f"[{node_address}]" if ":" in node_address else node_address
    original = getattr(
        replica.add_port_to_grpc_server, "__wrapped__", replica.add_port_to_grpc_server
    )

    def add_port(server, address: str):
        if address.startswith("[::]:"):
            address = f"{host}:{address.removeprefix('[::]:')}"
        return original(server, address)

    add_port.__wrapped__ = original
    replica.add_port_to_grpc_server = add_port


def init_ray(address: str = "", *, num_cpus: int | None = None, metrics_port: int = 0) -> float:
    """Connects to ``address`` or starts a loopback-only local instance; returns start-up seconds.

    Does nothing (and returns 0) when Ray is already initialised in this process. Every mrag entry
    point (CLI, jobs, Serve, notebooks) starts Ray through here, so the loopback rule holds for all.
    """
    address = address or os.environ.get("RAY_ADDRESS", "")  # set for `ray job submit` drivers
    quiet_known_warnings()
    if not address:
        loopback_only_ray()  # before `import ray`: Ray reads the setting at import
        # Token auth stays on (Ray's default for a local instance); only the banner that says
        # so on every start goes.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )

    import ray

    if ray.is_initialized():
        return 0.0
    started = time.perf_counter()
    if address:
        # Workers of a remote cluster do not share this process's environment: forward it.
        runtime_env = {"env_vars": forwarded_env()}
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    else:
        # Workers of a local instance inherit this environment. No runtime_env, so the workers
        # Ray prestarts at init can host the model actor (measured: ~1.3 s sooner to the first
        # forward pass, which a job-level env_vars runtime_env would forbid).
        ray.init(
            # A new instance of this process's own, never whatever cluster another program
            # started on the machine (which Ray would otherwise join): `--address auto` joins.
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            _metrics_export_port=metrics_port or None,
            logging_level=logging.WARNING,
            configure_logging=True,
        )
    elapsed = time.perf_counter() - started
    log.info("Ray ready in %.1f s", elapsed)
    return elapsed


#: Warnings a user would read as failure, with why each is harmless here.
_HARMLESS_WARNINGS = (
    # Lance warns on every fork of a process that imported it; Ray starts its workers with
    # fork + exec, which shares none of Lance's state.
    "lance is not fork-safe",
    "lancedb fork support is experimental",
)


def quiet_known_warnings() -> None:
    """Silences :data:`_HARMLESS_WARNINGS` here and (through ``PYTHONWARNINGS``, which local
    Ray workers inherit) in the workers this process starts."""
    import warnings

    entries = [f"ignore:{message}" for message in _HARMLESS_WARNINGS]
    for message in _HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    current = os.environ.get("PYTHONWARNINGS", "")
    missing = [e for e in entries if e not in current.split(",")]
    if missing:
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [current, *missing]))


#: Lines of Ray's C++ core on stderr that are no fault of the job, with why each is harmless.
_HARMLESS_STDERR = (
    # Logged (at error level) for every Ray Data actor pool: the pool's constructor arguments
    # are object refs the operator holds for the whole job, so a restarted actor finds them.
    b"has constructor arguments in the object store and max_restarts > 0",
)


@contextlib.contextmanager
def harmless_stderr_dropped() -> Iterator[None]:
    """Runs the block with file descriptor 2 through a pipe that drops the lines of
    :data:`_HARMLESS_STDERR`: Ray's C++ core writes to the descriptor directly, so no logging
    setting reaches them. For command-line entry points only (a test runner owns fd 2).

    Processes started in the block (Ray's) keep writing through the filter until they exit.
    """
    sys.stderr.flush()
    original = os.dup(2)  # stays open: the filter thread writes to it until the process ends
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as lines:
            for line in lines:
                if not any(noise in line for noise in _HARMLESS_STDERR):
                    os.write(original, line)

    threading.Thread(target=pump, name="mrag-stderr", daemon=True).start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)


def quiet_ray_data() -> None:
    """No progress bars or per-operator spam when output is not a terminal (jobs, CI, tests)."""
    import sys

    import ray.data

    context = ray.data.DataContext.get_current()
    interactive = sys.stderr.isatty()
    context.enable_progress_bars = interactive
    context.print_on_execution_start = interactive
    if not interactive:  # bars are off on purpose: no warning that they are, no per-run INFO
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(
            logging.WARNING
        )
