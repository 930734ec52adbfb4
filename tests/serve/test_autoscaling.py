"""Autoscaling shown on a running application: load on ``/v1/search`` takes the query encoder
from its minimum to more replicas, and it returns to the minimum once the load stops, with every
request answered while replicas start and stop.

Its own Serve start (local Ray, 2 CPUs): the encoder autoscales between 1 and 2 replicas of a
quarter CPU each (both fit on 2 cores beside the ingress and the generator), with short delays
and windows so the test takes about a minute; the retriever and reranker run in the ingress
(fewer replicas on the 2 cores) and the adaptive admission is off (a busy machine could make it
refuse a search, and this test is about the replicas). Replicas are counted with
``serve.status()``, Serve's public API.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from mrag.config import load_config
from mrag.serve.builder import APP_NAME, build_app, replica_options
from tests.serve.test_app import FIELD_NOTES, _free_port

ENCODER = "QueryEncoder"
#: Generous: replicas load their models on a shared 2-core machine. Not a speed check.
SCALE_DEADLINE_S = 150
LOAD_CLIENTS = 8
QUERIES = ("herons on the mudflats", "tide height", "estuary survey", "quokka ledger")


def test_model_stages_autoscale_between_their_replicas_and_max_replicas() -> None:
    from ray.serve._private.build_app import build_app as serve_build_app

    config = load_config(
        profile="offline",
        overrides={
            "db_uri": "/nonexistent",
            "serve.encoder_max_replicas": 3,
            "serve.generator_replicas": 2,
            "serve.generator_max_replicas": 2,  # not above its replicas: a fixed count
            "serve.autoscale_upscale_delay_s": 1,
        },
    )
    built = {d.name: d for d in serve_build_app(build_app(config), name=APP_NAME).deployments}
    scaling = built[ENCODER]._deployment_config.autoscaling_config
    assert (scaling.min_replicas, scaling.initial_replicas, scaling.max_replicas) == (1, 1, 3)
    assert scaling.target_ongoing_requests == config.serve.encoder_target_ongoing_requests
    assert (scaling.upscale_delay_s, scaling.downscale_delay_s) == (1, 120)
    assert built["Generator"]._deployment_config.autoscaling_config is None
    assert built["Generator"].num_replicas == 2
    # Only the model stages autoscale; the ingress's proxy refusals carry Retry-After.
    assert replica_options(config, "retriever") == {"num_replicas": 1}
    assert built["SearchIngress"]._deployment_config.backpressure_config.retry_after_s == 1


@dataclass
class _Load:
    """Clients sending searches back to back until stopped; every status code is kept."""

    url: str
    clients: int
    statuses: list[int | str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> _Load:
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def _client(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            i = n
            while not self._stop.is_set():
                body = {"query": QUERIES[i % len(QUERIES)], "k": 3, "mode": "vector"}
                i += 1
                try:
                    self.statuses.append(client.post("/v1/search", json=body).status_code)
                except httpx.HTTPError as exc:
                    self.statuses.append(type(exc).__name__)


def _encoder_replicas() -> dict[str, int]:
    """The encoder's replicas by state (``RUNNING``, ``STARTING``, ``STOPPING``...)."""
    from ray import serve

    return dict(serve.status().applications[APP_NAME].deployments[ENCODER].replica_states)


def _wait_for(condition, what: str, seen: list[dict[str, int]]) -> None:
    deadline = time.monotonic() + SCALE_DEADLINE_S
    while time.monotonic() < deadline:
        states = _encoder_replicas()
        if not seen or seen[-1] != states:
            seen.append(states)
        if condition(states):
            return
        time.sleep(0.5)
    raise AssertionError(f"the encoder never {what}; replica states seen: {seen}")


@pytest.fixture(scope="module")
def scaling_server(ray_local, tmp_path_factory):
    from ray import serve

    from mrag.pipelines.ingest import run_ingest
    from mrag.serve.app import run_server

    root = tmp_path_factory.mktemp("autoscale")
    media = root / "media"
    media.mkdir()
    for i in range(3):
        (media / f"notes-{i}.txt").write_text(f"Volume {i}. {FIELD_NOTES}")
    config = load_config(
        profile="offline",
        overrides={
            "db_uri": str(root / "db"),
            "serve.port": _free_port(),
            "serve.encoder_replicas": 1,
            "serve.encoder_max_replicas": 2,
            "serve.encoder_num_cpus": 0.25,
            # About one call at a time per replica: 8 clients want more than one replica.
            "serve.encoder_target_ongoing_requests": 1,
            "serve.autoscale_upscale_delay_s": 1,
            "serve.autoscale_downscale_delay_s": 3,
            "serve.autoscale_look_back_s": 2,
            "serve.autoscale_metrics_interval_s": 0.5,
            "serve.retriever_replicas": 0,
            "serve.reranker_replicas": 0,
            "serve.admission_target_latency_s": 0,
        },
    )
    summary = run_ingest(config, [str(media)])
    assert summary.ingested == 3, summary.render()
    url = run_server(config, blocking=False)
    try:
        yield url
    finally:
        serve.shutdown()


@pytest.mark.integration
@pytest.mark.slow
def test_load_scales_the_encoder_up_and_its_end_scales_it_down(scaling_server: str) -> None:
    seen: list[dict[str, int]] = []
    assert _encoder_replicas() == {"RUNNING": 1}  # its minimum

    with _Load(scaling_server, LOAD_CLIENTS) as load:
        _wait_for(lambda s: s.get("RUNNING", 0) >= 2, "scaled up under load", seen)
        # Searches keep coming while both replicas serve.
        answered = len(load.statuses)
        while len(load.statuses) < answered + 4 * LOAD_CLIENTS:
            time.sleep(0.1)
    # The load is over; one client goes on searching while the second replica is stopped.
    with _Load(scaling_server, 1) as trickle:
        _wait_for(lambda s: s == {"RUNNING": 1}, "scaled back down", seen)
        searched = len(trickle.statuses)
        while len(trickle.statuses) < searched + 3:  # and after
            time.sleep(0.1)

    print(f"encoder replicas by state, as they changed: {seen}")
    running = [states.get("RUNNING", 0) for states in seen]
    assert running[0] == 1 and max(running) == 2 and running[-1] == 1, seen
    failed = [s for s in load.statuses + trickle.statuses if s != 200]
    assert not failed, f"{len(failed)} of {len(load.statuses) + len(trickle.statuses)}: {failed}"
    assert len(load.statuses) >= 4 * LOAD_CLIENTS and len(trickle.statuses) >= 3
