"""Stopping ``mrag serve`` cleanly on SIGTERM (Kubernetes, systemd) or Ctrl-C.

    signal → every ingress replica stops admitting (503 with ``Connection: close``, ``/healthz``
    included, so load balancers move on) → requests in flight finish, for at most
    ``serve.shutdown_grace_s`` → the Ray that mrag started shuts down with Serve's actors in it
    (on a joined cluster: ``serve.shutdown()``), and any process of it still left is ended →
    one line on stdout, exit status 0.

Why the ingress is drained first: ``serve.shutdown()`` deletes every deployment and kills the
HTTP proxy at once, so a request in flight loses its connection, and one that still has to call
the retriever or the generator finds no replica. Once the ingress has nothing in flight, nothing
downstream has either.

Why a handler of our own: ``ray.init`` replaces the driver's SIGTERM handler with one that
exits with status 15 (``sys.exit(signum)`` in ``ray/_private/worker.py``; a local node adds
one that kills Ray's processes and exits 1), and Ray's C++ core prints its
``*** SIGTERM received ***`` stack dump before chaining to it. :class:`StopSignals` is
installed again after ``ray.init`` and replaces them all.

Pieces: :class:`DrainState` (per ingress replica: counts requests in flight, refuses new ones
once draining; no Ray), :class:`DrainCoordinator` (a plain Ray actor the driver tells to drain
and the replicas report to; not a deployment method, whose call would wait in the ingress's
queue behind the very requests it should stop), :func:`watch_for_drain` (the replica's side),
:class:`StopSignals`, :func:`drain_ingress` and :func:`shut_down` (the driver's side).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import types
    from collections.abc import Callable

log = logging.getLogger(__name__)

#: How often a draining replica and the driver look at the count of requests in flight.
_POLL_S = 0.05
#: How long Ray's processes get to exit after ``ray.shutdown()`` before they are killed.
_REAP_TIMEOUT_S = 10.0
#: How long they get after SIGTERM when Ray's own shutdown cannot run (its GCS is gone).
_TERMINATE_TIMEOUT_S = 2.0
#: Ray's own daemons of a local instance, children of the driver.
_RAY_DAEMONS = ("raylet", "gcs_server")


class DrainState:
    """One ingress replica's requests in flight, and whether it still admits new ones.

    Used from the replica's event loop only (the ASGI middleware and :func:`watch_for_drain`).
    """

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        #: Requests that were in flight when draining began (or admitted just before) and have
        #: finished since.
        self.finished_while_draining = 0

    def admit(self) -> bool:
        """Counts a new request in; ``False`` once draining (the caller refuses it)."""
        if self.draining:
            return False
        self.in_flight += 1
        return True

    def done(self) -> None:
        self.in_flight -= 1
        if self.draining:
            self.finished_while_draining += 1


class DrainCoordinator:
    """The driver's channel to every ingress replica (run as a Ray actor by
    :func:`start_coordinator`): replicas register and wait for :meth:`drain`, then report how
    many requests they still have in flight."""

    def __init__(self) -> None:
        self._drain = asyncio.Event()
        self._reports: dict[str, tuple[int, int] | None] = {}

    async def register(self, replica: str) -> None:
        self._reports[replica] = None

    async def wait_for_drain(self) -> None:
        await self._drain.wait()

    async def drain(self) -> None:
        self._drain.set()

    async def report(self, replica: str, in_flight: int, finished: int) -> None:
        self._reports[replica] = (in_flight, finished)

    async def status(self) -> dict[str, int]:
        """Replicas registered and reported, and their requests in flight and finished."""
        reports = [r for r in self._reports.values() if r is not None]
        return {
            "replicas": len(self._reports),
            "reported": len(reports),
            "in_flight": sum(r[0] for r in reports),
            "finished": sum(r[1] for r in reports),
        }


def start_coordinator() -> Any:
    """A :class:`DrainCoordinator` actor owned by this driver (it goes when the driver goes)."""
    import ray

    return ray.remote(num_cpus=0)(DrainCoordinator).remote()


async def watch_for_drain(coordinator: Any, state: DrainState, replica: str) -> None:
    """An ingress replica's side: waits for the driver's word, stops admitting, and reports its
    requests in flight until none is left. Ends quietly when the coordinator is gone (its
    driver exited: nobody is waiting for a report)."""
    from ray.exceptions import RayError

    try:
        await coordinator.register.remote(replica)
        await coordinator.wait_for_drain.remote()
        state.draining = True
        log.info("draining: %d requests in flight", state.in_flight)
        reported = None
        while True:
            now = (state.in_flight, state.finished_while_draining)
            if now != reported:
                await coordinator.report.remote(replica, *now)
                reported = now
            if state.in_flight <= 0:
                return
            await asyncio.sleep(_POLL_S)
    except RayError as exc:
        log.info("shutdown coordinator unreachable (%s): not draining", type(exc).__name__)


class StopRequested(KeyboardInterrupt):
    """A stop signal during start-up: leaves ``ray.init``/``serve.run`` at once, as Ctrl-C."""


class StopSignals:
    """SIGTERM and SIGINT handlers for the serving process (main thread only).

    During start-up the first signal raises :class:`StopRequested`; once serving it only sets
    :attr:`requested`, and the main thread drains. A second signal sets :attr:`hurry`: stop
    waiting for requests in flight.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.hurry = threading.Event()
        self.name = ""
        self._serving = False
        # A SIGINT ignored from the start stays ignored (as Python itself does): a shell starts
        # background jobs so, and Ctrl-C in that terminal is not meant for them.
        self._signals = tuple(
            s for s in self.SIGNALS if s != signal.SIGINT or signal.getsignal(s) != signal.SIG_IGN
        )

    def install(self) -> None:
        """(Re)installs the handlers; call again after ``ray.init``, which replaces them."""
        for signum in self._signals:
            signal.signal(signum, self._handle)

    def serving(self) -> None:
        self._serving = True

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        if self.requested.is_set():
            self.hurry.set()
            return
        self.name = signal.Signals(signum).name
        self.requested.set()
        if not self._serving:
            raise StopRequested(self.name)

    def wait(self) -> None:
        """Blocks until a stop signal arrives (the handlers run in this, the main, thread)."""
        while not self.requested.wait(timeout=1.0):
            pass


@dataclass(frozen=True)
class ServeStopped:
    """How ``mrag serve`` ended: which signal, what became of the requests in flight."""

    signal: str
    finished: int = 0
    cut_off: int = 0
    seconds: float = 0.0
    during_start_up: bool = False
    #: Ray's own daemons had stopped before the drain (a SIGTERM to the whole process group).
    ray_lost: bool = False
    note: str = ""

    def render(self) -> str:
        """The one line ``mrag serve`` ends with."""
        said = f"mrag serve: stopped on {self.signal or 'request'}"
        if self.during_start_up:
            said += " during start-up"
        elif self.ray_lost:
            said += (
                ": Ray's own processes got the signal too, so requests in flight (if any) were "
                "cut off"
            )
        else:
            cut_off = _count(self.cut_off, "request") if self.cut_off else "none"
            said += f": {_count(self.finished, 'request')} in flight finished, {cut_off} cut off"
        note = f" ({self.note})" if self.note else ""
        return f"{said}; Serve and Ray shut down in {self.seconds:.1f} s{note}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def drain_ingress(
    coordinator: Any, grace_s: float, hurry: threading.Event, ray_up: Callable[[], bool]
) -> tuple[int, int]:
    """Tells every ingress replica to stop admitting and waits, for at most ``grace_s``, until
    none has a request in flight. Stops waiting early on ``hurry`` (a second signal) or once
    ``ray_up()`` is false (Ray's own processes got the signal too: nothing left to wait for).

    Returns:
        (requests in flight that finished, requests still in flight).
    """
    import ray
    from ray.exceptions import RayError

    deadline = time.monotonic() + grace_s
    status = {"replicas": 0, "reported": 0, "in_flight": 0, "finished": 0}

    def answered(ref: Any) -> bool:
        """Waits for one call to the coordinator, but never past the deadline or Ray's end."""
        while not hurry.is_set() and ray_up() and time.monotonic() < deadline:
            ready, _ = ray.wait([ref], timeout=_POLL_S)
            if ready:
                return True
        return False

    try:
        if not answered(coordinator.drain.remote()):
            log.info("no drain: %s", "cut short" if ray_up() else "Ray's own processes are gone")
            return 0, 0
        while True:
            ref = coordinator.status.remote()
            if not answered(ref):
                break
            status = ray.get(ref)
            if status["reported"] == status["replicas"] and status["in_flight"] <= 0:
                break
            if hurry.wait(_POLL_S):
                break
    except RayError as exc:
        log.warning("could not drain the ingress (%s); shutting down", type(exc).__name__)
    log.info("drain over after %.1f s: %s", grace_s - (deadline - time.monotonic()), status)
    return status["finished"], max(status["in_flight"], 0)


def ray_daemons() -> list[Any]:
    """The local Ray's own daemons this process started (``psutil.Process`` each)."""
    import psutil  # Ray ships it (ray/thirdparty_files), so it is there once Ray is

    found = []
    for child in psutil.Process().children():
        try:
            if child.name() in _RAY_DAEMONS:
                found.append(child)
        except psutil.Error:
            continue
    return found


def all_running(processes: list[Any]) -> bool:
    """Whether every one of ``processes`` is still running (a zombie is not)."""
    import psutil

    try:
        return all(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in processes)
    except psutil.Error:
        return False


def shut_down(*, local_ray: bool, daemons: list[Any]) -> str:
    """Shuts Serve down with the local Ray this process started (``local_ray``; on a joined
    cluster, Serve alone), then ends whatever process of that Ray is still left. Returns a note
    for the last line ('' when all went as planned).

    A local Ray goes with ``ray.shutdown()`` alone: it ends Serve's controller, proxy and
    replicas with it, and the ingress has nothing in flight by then. (``serve.shutdown()``
    first would add seconds and a warning from Ray about the controller task it kills.)
    ``daemons`` (:func:`ray_daemons`, taken at start-up): when one is already gone (the whole
    process group got SIGTERM, and Ray's daemons stop on it at once), ``ray.shutdown()`` would
    wait on a GCS that is gone; Ray's processes are ended directly instead.
    """
    import psutil
    import ray

    leftovers = psutil.Process().children(recursive=True) if local_ray else []
    daemons_up = all_running(daemons)
    log.info("shutting down (local Ray: %s, its daemons up: %s)", local_ray, daemons_up)
    note = ""
    if not ray.is_initialized():  # stopped before Ray was up
        pass
    elif not local_ray:
        from ray import serve

        try:
            serve.shutdown()
        except Exception as exc:  # noqa: BLE001 - the driver leaves regardless: say so, go on
            log.warning("serve.shutdown() failed: %s", exc)
            note = f"Serve did not shut down cleanly: {type(exc).__name__}"
        ray.shutdown()
    elif daemons_up:
        ray.shutdown()
    else:
        # What Ray's own shutdown does to its processes (SIGTERM, then SIGKILL), without the
        # calls to a GCS that is gone.
        _terminate(leftovers)
        _kill(_wait_gone(leftovers, _TERMINATE_TIMEOUT_S))
        return note
    alive = _wait_gone(leftovers, _REAP_TIMEOUT_S)
    if alive:
        names = sorted({_name(p) for p in alive})
        _kill(alive)
        log.warning("killed %d Ray processes left after the shutdown: %s", len(alive), names)
    return note


def _wait_gone(processes: list[Any], timeout_s: float) -> list[Any]:
    """Waits until every process has exited; returns those still running after ``timeout_s``.

    An exited process counts as gone even before its parent reaps it (Ray's workers are
    reparented when the raylet goes, and a container's init may reap late); this process's
    own children are reaped here.
    """
    import psutil

    def running(process: Any) -> bool:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                with contextlib.suppress(psutil.Error):
                    process.wait(timeout=0)  # reaps it when it is our child
                return False
            return process.is_running()
        except psutil.Error:
            return False

    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in processes if running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(_POLL_S)


def _kill(processes: list[Any]) -> None:
    import psutil

    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            continue
    _wait_gone(processes, _REAP_TIMEOUT_S)


def _name(process: Any) -> str:
    import psutil

    try:
        return " ".join(process.cmdline()[:1]) or process.name()
    except psutil.Error:
        return str(process.pid)


def _terminate(processes: list[Any]) -> None:
    import psutil

    for process in processes:
        try:
            process.terminate()
        except psutil.Error:
            continue
