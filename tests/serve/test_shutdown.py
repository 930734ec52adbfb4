"""``mrag serve`` stopped as a user stops it, with a request in flight: SIGTERM to the process
(Kubernetes), SIGTERM to its whole process group, Ctrl-C (SIGINT to the group).

Each test starts the installed ``mrag serve`` in a session of its own (so a signal to its group
reaches it and Ray's daemons, not pytest). The request in flight is a ``/v1/answer`` whose
generator is an OpenAI-compatible endpoint owned by the test (``generate.generator=openai``):
it sends the first words of the answer and then holds the rest until the test releases it, so
the request is provably in flight when the signal lands, with no sleep and no timing.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import psutil
import pytest

from mrag.config import load_config
from tests.generate.server import serve as serve_endpoint
from tests.processes import mrag_command, user_env
from tests.serve.test_app import FIELD_NOTES, _free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Questions with this word are held by the endpoint until the test releases them.
HOLD = "zephyrine"
MODEL = "held-answers"
QUESTION = f"{HOLD}: when were the herons counted?"


class HeldGenerator:
    """A :class:`~mrag.generate.Generator` behind the test's chat-completions endpoint: answers
    at once, except that a prompt with :data:`HOLD` waits for :attr:`release` after its first
    words (:attr:`holding` is set then)."""

    name = MODEL
    accepts_images = False

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.release = threading.Event()

    def generate(self, prompt):
        from mrag.generate.base import Generation

        def deltas() -> Iterator[str]:
            yield "Herons were counted at dawn"
            if HOLD in prompt.user:
                self.holding.set()
                self.release.wait(timeout=300)
            yield " [1]."

        return Generation(deltas())


@pytest.fixture(scope="module")
def db(ray_local, tmp_path_factory) -> str:
    from mrag.pipelines.ingest import run_ingest

    root = tmp_path_factory.mktemp("shutdown")
    (root / "media").mkdir()
    (root / "media" / "field-notes.txt").write_text(FIELD_NOTES)
    config = load_config(profile="offline", overrides={"db_uri": str(root / "db")})
    assert run_ingest(config, [str(root / "media")]).ingested == 1
    return config.db_uri


@pytest.fixture(scope="module")
def endpoint() -> Iterator[tuple[str, HeldGenerator]]:
    from mrag.generate.openai_server import create_app

    generator = HeldGenerator()
    with serve_endpoint(create_app(generator)) as url:
        yield url, generator


@dataclass
class Run:
    """One ``mrag serve`` process and what a test reads of it."""

    process: subprocess.Popen
    url: str
    token: str
    stdout: Path
    stderr: Path
    session_dir: Path
    ray_processes: list[psutil.Process]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def answer_in_background(self, pool: ThreadPoolExecutor):
        def ask() -> httpx.Response | Exception:
            try:
                return httpx.post(
                    f"{self.url}/v1/answer",
                    json={"query": QUESTION, "k": 3},
                    headers=self.auth,
                    timeout=300,
                )
            except httpx.HTTPError as exc:  # a connection Ray's end cut
                return exc

        return pool.submit(ask)


@pytest.fixture
def start(db: str, endpoint, tmp_path: Path) -> Iterator:
    url, generator = endpoint
    started: list[Run] = []

    def start_server() -> Run:
        generator.holding.clear()
        generator.release.clear()
        port = _free_port()
        token = secrets.token_urlsafe(24)
        stdout, stderr = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        command = [
            mrag_command(), "serve", "--db", db, "--profile", "offline", "--port", str(port),
            "--set", "generate.generator=openai", "--set", f"generate.base_url={url}",
            "--set", f"generate.model={MODEL}", "--set", "generate.timeout_s=600",
            "--set", "serve.shutdown_grace_s=600",
        ]  # fmt: skip
        with stdout.open("w") as out, stderr.open("w") as err:
            process = subprocess.Popen(
                command,
                stdout=out,
                stderr=err,
                env=user_env(MRAG_API_TOKEN=token),
                start_new_session=True,  # its own process group, as under a shell or init
                # Ctrl-C reaches it as in a terminal, even when this suite runs as a background
                # job (whose SIGINT the shell ignores, and children inherit that).
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        run = Run(process, f"http://127.0.0.1:{port}", token, stdout, stderr, Path(), [])
        started.append(run)
        _wait_for(lambda: "mrag API ready" in stdout.read_text(), run, timeout_s=300)
        run.ray_processes = psutil.Process(process.pid).children(recursive=True)
        run.session_dir = _session_dir(run.ray_processes)
        return run

    yield start_server
    generator.release.set()
    for run in started:
        if run.process.poll() is None:
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait()
        for process in run.ray_processes:
            if _running(process):
                process.kill()


def _wait_for(condition, run: Run, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if run.process.poll() is not None:
            raise AssertionError(f"mrag serve exited: {run.stderr.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not done after {timeout_s} s: {run.stderr.read_text()[-3000:]}")
        time.sleep(0.2)


def _session_dir(processes: list[psutil.Process]) -> Path:
    """The Ray session folder of the run (the raylet's command line names it)."""
    for process in processes:
        for arg in process.cmdline():
            if arg.startswith("--session_dir="):
                return Path(arg.partition("=")[2])
    raise AssertionError("no raylet among the children of mrag serve")


def _running(process: psutil.Process) -> bool:
    """Running and not a zombie (an exited process its parent has not reaped yet holds nothing)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _left_behind(run: Run) -> list[str]:
    """Every process of that run still running: the ones seen while it served (raylet, GCS,
    ``ray::`` workers and replicas...) and any other naming its session folder."""
    session = str(run.session_dir)
    left = {p.pid: p for p in run.ray_processes if _running(p)}
    for process in psutil.process_iter(["cmdline"]):
        if session in " ".join(process.info["cmdline"] or ()) and _running(process):
            left[process.pid] = process
    names = []
    for process in left.values():
        try:
            names.append(f"{process.pid} {' '.join(process.cmdline())[:80]}")
        except psutil.Error:
            continue
    return names


def _stop_line(run: Run) -> str:
    lines = run.stdout.read_text().splitlines()
    assert lines, "mrag serve printed nothing"
    return lines[-1]


def _assert_clean_exit(run: Run) -> None:
    assert run.process.wait(timeout=300) == 0, run.stderr.read_text()[-3000:]
    stderr = run.stderr.read_text()
    for noise in ("SIGTERM received", "Aborted", "Traceback"):
        assert noise not in stderr, stderr[-3000:]
    assert _left_behind(run) == []


def _refuses_new_requests(run: Run) -> None:
    """Once draining, /healthz and /v1/ answer 503 at once, JSON, telling why."""

    def healthz_status() -> int:
        try:
            return httpx.get(f"{run.url}/healthz", timeout=30).status_code
        except httpx.HTTPError:
            return 0

    _wait_for(lambda: healthz_status() == 503, run, timeout_s=120)
    refused = httpx.post(
        f"{run.url}/v1/search", json={"query": "herons"}, headers=run.auth, timeout=30
    )
    assert refused.status_code == 503
    assert refused.json() == {"error": "the server is shutting down; retry in a moment"}
    assert refused.headers["connection"] == "close"


def test_sigterm_finishes_the_request_in_flight_and_exits_0(start, endpoint) -> None:
    _, generator = endpoint
    run = start()
    with ThreadPoolExecutor(1) as pool:
        in_flight = run.answer_in_background(pool)
        assert generator.holding.wait(timeout=300), "the answer never reached the generator"
        wrong = httpx.post(
            f"{run.url}/v1/search", json={"query": "x"}, headers={"Authorization": "Bearer no"}
        )
        assert wrong.status_code == 401

        run.process.send_signal(signal.SIGTERM)
        _refuses_new_requests(run)
        generator.release.set()
        response = in_flight.result(timeout=300)

    assert not isinstance(response, Exception), response
    assert response.status_code == 200, response.text
    assert response.json()["answer"] == "Herons were counted at dawn [1]."
    _assert_clean_exit(run)
    assert re.fullmatch(
        r"mrag serve: stopped on SIGTERM: 1 request in flight finished, none cut off; "
        r"Serve and Ray shut down in [\d.]+ s",
        _stop_line(run),
    ), _stop_line(run)
    # The token is in no log of the run, nor in anything the run printed or answered.
    logs = [p for p in (run.session_dir / "logs").rglob("*") if p.is_file()]
    assert any(b"POST /v1/answer" in p.read_bytes() for p in logs)  # the replicas' logs are here
    token = run.token.encode()
    leaks = [str(p) for p in [*logs, run.stdout, run.stderr] if token in p.read_bytes()]
    assert leaks == []
    assert run.token not in wrong.text + response.text


def test_sigterm_to_the_whole_process_group_still_finishes_the_request_in_flight(
    start, endpoint
) -> None:
    """systemd's default and ``kill -- -PGID``: the server runs in a child of its own session,
    so Ray's daemons never get the signal and the drain goes as for a SIGTERM to the process."""
    _, generator = endpoint
    run = start()
    with ThreadPoolExecutor(1) as pool:
        in_flight = run.answer_in_background(pool)
        assert generator.holding.wait(timeout=300)
        os.killpg(run.process.pid, signal.SIGTERM)
        _refuses_new_requests(run)
        generator.release.set()
        response = in_flight.result(timeout=300)

    assert not isinstance(response, Exception), response
    assert response.status_code == 200, response.text
    _assert_clean_exit(run)
    assert _stop_line(run).startswith(
        "mrag serve: stopped on SIGTERM: 1 request in flight finished, none cut off;"
    ), _stop_line(run)


def test_ctrl_c_finishes_the_request_in_flight_and_exits_0(start, endpoint) -> None:
    """SIGINT to the whole group, as a terminal's Ctrl-C: Ray's daemons ignore it."""
    _, generator = endpoint
    run = start()
    with ThreadPoolExecutor(1) as pool:
        in_flight = run.answer_in_background(pool)
        assert generator.holding.wait(timeout=300)
        os.killpg(run.process.pid, signal.SIGINT)
        _refuses_new_requests(run)
        generator.release.set()
        response = in_flight.result(timeout=300)

    assert not isinstance(response, Exception), response
    assert response.status_code == 200, response.text
    _assert_clean_exit(run)
    assert _stop_line(run).startswith(
        "mrag serve: stopped on SIGINT: 1 request in flight finished, none cut off;"
    )


def _wait_for_exit(run: Run) -> None:
    try:
        run.process.wait(timeout=300)
    except subprocess.TimeoutExpired:
        stderr = run.stderr.read_text()[-3000:]
        raise AssertionError(f"mrag serve still running: {stderr}") from None
