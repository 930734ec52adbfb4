"""Overload, and a model generator on Serve: past its queue the application refuses with 503 at
once instead of timing out; the Generator deployment streams a causal LM's tokens.

Its own Serve start, with one slot and one queue place per deployment (so a burst of concurrent
answers is certain to overflow it on any machine) and the seeded tiny causal LM as generator.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mrag.config import load_config
from tests.serve.test_app import FIELD_NOTES, _free_port

BURST = 24


@pytest.fixture(scope="module")
def tight_server(ray_local, tmp_path_factory):
    from ray import serve

    from mrag.pipelines.ingest import run_ingest
    from mrag.serve.app import run_server

    root = tmp_path_factory.mktemp("tight")
    media = root / "media"
    media.mkdir()
    for i in range(3):
        (media / f"notes-{i}.txt").write_text(f"Volume {i}. {FIELD_NOTES}")
    config = load_config(
        profile="offline",
        overrides={
            "db_uri": str(root / "db"),
            "serve.port": _free_port(),
            "serve.max_ongoing_requests": 1,
            "serve.max_queued_requests": 1,
            "generate.generator": "tiny-causal-lm-random",
            "generate.max_new_tokens": 12,
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
def test_a_burst_beyond_capacity_gets_503s_and_no_time_outs(tight_server: str) -> None:
    body = {"query": "when were the herons counted?", "k": 3}

    def ask(_: int) -> int | str:
        try:
            with httpx.Client(base_url=tight_server, timeout=60) as client:
                return client.post("/v1/answer", json=body).status_code
        except httpx.TimeoutException:
            return "timeout"

    with ThreadPoolExecutor(max_workers=BURST) as pool:
        statuses = list(pool.map(ask, range(BURST)))
    assert "timeout" not in statuses
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(503) >= 1 and statuses.count(200) >= 1, statuses
    # Once the burst is over the application serves again.
    with httpx.Client(base_url=tight_server, timeout=60) as client:
        assert client.post("/v1/answer", json=body).status_code == 200


@pytest.mark.integration
def test_the_generator_deployment_streams_a_models_tokens(tight_server: str) -> None:
    from tests.serve.test_app import _sse_events

    body = {"query": "when were the herons counted?", "k": 2, "stream": True}
    with httpx.Client(base_url=tight_server, timeout=60) as client:
        response = client.post("/v1/answer", json=body)
    assert response.status_code == 200, response.text
    events = _sse_events(response)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "hits" and kinds[-2:] == ["citations", "done"], kinds
    deltas = [data["text"] for kind, data in events if kind == "delta"]
    done = events[-1][1]
    assert done["generator"] == "tiny-causal-lm-random"
    assert len(deltas) >= 2 and "".join(deltas) == done["answer"]  # token by token
    # Random weights write noise: whatever [n] it writes either maps to a hit or is dropped.
    hit_ids = {hit["chunk_id"] for hit in events[0][1]["hits"]}
    assert all(c["chunk_id"] in hit_ids for c in events[-2][1]["citations"])
