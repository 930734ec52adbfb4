"""The pieces of a clean stop, without Ray: the ingress's drain gate, a replica's reports to the
shutdown coordinator, the signal handlers and the line ``mrag serve`` ends with.

(``tests/serve/test_shutdown.py`` stops the real ``mrag serve`` with signals.)
"""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mrag.config import load_config
from mrag.serve.answer import AnswerService
from mrag.serve.ingress import SearchService, create_api
from mrag.serve.shutdown import (
    DrainCoordinator,
    DrainState,
    ServeStopped,
    StopRequested,
    StopSignals,
    watch_for_drain,
)
from tests.serve.test_ingress import FakeEncoder, FakeRetriever, _HeldGenerator


def test_a_draining_replica_refuses_new_requests_and_finishes_the_admitted_one() -> None:
    config = load_config(profile="offline")
    service = SearchService(config, FakeEncoder(), FakeRetriever())
    generator = _HeldGenerator()
    state = DrainState()
    app = create_api(service, answers=AnswerService(service, generator), drain=state)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 200
        admitted: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: admitted.update(r=client.post("/v1/answer", json={"query": "notes"}))
        )
        worker.start()
        assert generator.started.wait(30)
        assert state.in_flight == 1

        state.draining = True  # what watch_for_drain does on the coordinator's word
        for refused in (
            client.get("/healthz"),  # load balancers take the replica out
            client.post("/v1/search", json={"query": "notes"}),
            client.get("/"),
        ):
            assert refused.status_code == 503
            assert refused.json() == {"error": "the server is shutting down; retry in a moment"}
            assert refused.headers["connection"] == "close"
            assert refused.headers["retry-after"] == "1"

        generator.release.set()
        worker.join(30)
    assert admitted["r"].status_code == 200, admitted["r"].text
    assert admitted["r"].json()["answer"] == "Notes [1]."
    assert (state.in_flight, state.finished_while_draining) == (0, 1)


class _Actor:
    """``actor.method.remote(...)`` over a plain object, as a Ray actor handle is called."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)

        class _Method:
            @staticmethod
            def remote(*args: Any) -> Any:
                return method(*args)

        return _Method


def test_a_replica_reports_its_requests_in_flight_until_none_is_left() -> None:
    async def scenario() -> list[dict[str, int]]:
        coordinator = DrainCoordinator()
        state = DrainState()
        assert state.admit() and state.admit()
        watch = asyncio.create_task(watch_for_drain(_Actor(coordinator), state, "replica-1"))
        seen = []
        while (await coordinator.status())["replicas"] == 0:
            await asyncio.sleep(0.01)
        seen.append(await coordinator.status())
        assert not state.draining  # admits until told

        await coordinator.drain()
        while (await coordinator.status())["reported"] == 0:
            await asyncio.sleep(0.01)
        seen.append(await coordinator.status())
        assert state.draining and not state.admit()
        state.done()
        state.done()
        await asyncio.wait_for(watch, timeout=30)  # ends once nothing is in flight
        seen.append(await coordinator.status())
        return seen

    registered, draining, drained = asyncio.run(scenario())
    assert registered == {"replicas": 1, "reported": 0, "in_flight": 0, "finished": 0}
    assert draining == {"replicas": 1, "reported": 1, "in_flight": 2, "finished": 0}
    assert drained == {"replicas": 1, "reported": 1, "in_flight": 0, "finished": 2}


@pytest.fixture
def own_handlers():
    saved = {s: signal.getsignal(s) for s in StopSignals.SIGNALS}
    # As in a terminal, even when the suite runs as a background job (SIGINT ignored from the
    # start, which StopSignals rightly keeps ignoring).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_signals_abort_start_up_then_ask_for_a_stop_then_hurry(own_handlers) -> None:
    starting = StopSignals()
    starting.install()
    with pytest.raises(StopRequested):  # the handler runs in this, the main, thread
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
    assert starting.name == "SIGTERM"

    serving = StopSignals()
    serving.install()
    serving.serving()
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    assert serving.requested.is_set() and not serving.hurry.is_set()
    assert serving.name == "SIGINT"
    # A second signal: stop waiting for the requests in flight.
    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
    assert serving.hurry.is_set() and serving.name == "SIGINT"


def test_the_last_line_says_what_became_of_the_requests_in_flight() -> None:
    assert ServeStopped("SIGTERM", finished=1, seconds=2.04).render() == (
        "mrag serve: stopped on SIGTERM: 1 request in flight finished, none cut off; "
        "Serve and Ray shut down in 2.0 s"
    )
    assert (
        ServeStopped("SIGINT", finished=3, cut_off=2, seconds=20)
        .render()
        .startswith(
            "mrag serve: stopped on SIGINT: 3 requests in flight finished, 2 requests cut off;"
        )
    )
    assert (
        ServeStopped("SIGTERM", during_start_up=True)
        .render()
        .startswith("mrag serve: stopped on SIGTERM during start-up;")
    )
    lost = ServeStopped("SIGTERM", ray_lost=True).render()
    assert "Ray's own processes got the signal too" in lost
