"""Admission of ``/v1/search`` without Ray: the adaptive limit follows the capacity it measures,
Retry-After keeps refused clients from crowding out the answered ones, and a refusal is made
before the request's body is read.

The limit is driven by a simulated server on a simulated clock (deterministic: no sleeps, no
timing of this machine): a FIFO worker that answers ``capacity`` searches per second, and
closed-loop clients that send again as soon as they are answered and, when refused, wait the
Retry-After they were given (times a seeded random 1-1.5, as ``bench/serve_load.py``'s do).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import random
from typing import Any

import pytest

from mrag.config import load_config
from mrag.serve.gate import AdaptiveLimit
from mrag.serve.ingress import SearchService, create_api, search_admission
from tests.serve.test_ingress import FakeEncoder, FakeRetriever


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _limit(clock: _Clock, **overrides: Any) -> AdaptiveLimit:
    settings = {"target_latency_s": 0.5, "min_limit": 4, "max_limit": 64, "max_retry_after_s": 10}
    return AdaptiveLimit(**{**settings, **overrides}, clock=clock)


def _overload(
    limit: AdaptiveLimit,
    clock: _Clock,
    *,
    clients: int,
    capacity: float,
    seconds: float,
    honour_retry_after: bool = True,
) -> dict[str, float]:
    """``clients`` closed-loop clients against one worker answering ``capacity`` searches a
    second, first come first served, behind ``limit``, for ``seconds`` from ``clock.now``.
    Returns answers and refusals per second
    and the worker's busy share, over the second half (after the limit settled)."""
    service_s = 1.0 / capacity
    begin_s = clock.now
    rng = random.Random(7)
    events: list[tuple[float, int, str, int]] = []  # (time, seq, kind, client)
    seq = 0

    def at(time_s: float, kind: str, client: int) -> None:
        nonlocal seq
        heapq.heappush(events, (time_s, seq, kind, client))
        seq += 1

    for client in range(clients):
        at(begin_s + rng.uniform(0, 0.05), "send", client)
    worker_free_at = begin_s
    started: dict[int, float] = {}
    settle = begin_s + seconds / 2
    end_s = begin_s + seconds
    answered = refused = 0
    busy_s = 0.0
    while events:
        time_s, _, kind, client = heapq.heappop(events)
        if time_s > end_s:
            break
        clock.now = time_s
        if kind == "send":
            start = limit.acquire()
            if start is None:
                refused += time_s >= settle
                wait_s = limit.retry_after_s if honour_retry_after else 0.05
                at(time_s + wait_s * rng.uniform(1.0, 1.5), "send", client)
                continue
            started[client] = start
            begin = max(time_s, worker_free_at)
            worker_free_at = begin + service_s
            if begin >= settle:
                busy_s += service_s
            at(worker_free_at, "done", client)
        else:
            limit.release(started.pop(client))
            answered += time_s >= settle
            at(time_s, "send", client)
    # Clients still in flight at the end are simply dropped (the limit's count with them).
    limit.in_flight -= len(started)
    window = end_s - settle
    return {
        "answered_per_s": answered / window,
        "refused_per_s": refused / window,
        "busy": busy_s / window,
    }


def test_under_overload_the_limit_settles_at_throughput_times_the_target_latency() -> None:
    clock = _Clock()
    limit = _limit(clock)
    figures = _overload(limit, clock, clients=128, capacity=40, seconds=120)

    # Little's law: 40 answers/s x 0.5 s = 20 in flight, so an admitted search waits ~0.5 s
    # instead of the 128 / 40 = 3.2 s of a queue that takes everyone.
    assert 15 <= limit.limit <= 25, limit.stats()
    assert limit.latency_s <= 0.7, limit.stats()
    # The worker never idles for want of admitted work: the answered rate is its capacity...
    assert figures["busy"] >= 0.97, figures
    assert figures["answered_per_s"] >= 0.97 * 40, figures
    # ...and refused clients come back about as fast as searches are answered, not 20 times a
    # second each: the ~108 clients waiting are told to wait ~108 / 40 s.
    assert figures["refused_per_s"] <= 1.5 * figures["answered_per_s"], figures
    assert 2 <= limit.retry_after_s <= 5, limit.stats()


def test_clients_that_ignore_retry_after_are_refused_many_times_more() -> None:
    """What made the benchmark's goodput collapse: each refusal is cheap, but not free."""
    polite = _overload(_limit(clock := _Clock()), clock, clients=128, capacity=40, seconds=60)
    rude = _overload(
        _limit(clock := _Clock()),
        clock,
        clients=128,
        capacity=40,
        seconds=60,
        honour_retry_after=False,
    )
    assert rude["refused_per_s"] >= 10 * polite["refused_per_s"], (polite, rude)


def test_the_limit_follows_capacity_up_and_down() -> None:
    clock = _Clock()
    limit = _limit(clock)
    _overload(limit, clock, clients=128, capacity=40, seconds=60)
    at_40 = limit.limit
    # More capacity behind the ingress (a second replica, a GPU): the limit rises with it.
    _overload(limit, clock, clients=128, capacity=100, seconds=60)
    at_100 = limit.limit
    assert at_100 >= 2 * at_40, (at_40, at_100)
    assert 40 <= at_100 <= 60, limit.stats()
    # Less: it falls again.
    _overload(limit, clock, clients=128, capacity=10, seconds=60)
    assert limit.limit <= 7, limit.stats()


def test_a_quiet_spell_keeps_the_limit_and_it_stays_within_its_bounds() -> None:
    clock = _Clock()
    limit = _limit(clock)
    _overload(limit, clock, clients=128, capacity=40, seconds=60)

    def one_client(searches: int) -> None:
        for _ in range(searches):
            started = limit.acquire()
            assert started is not None
            clock.now += 0.02
            limit.release(started)

    one_client(100)  # closes the window the overload ended in
    settled = limit.limit
    # One client at a time, answered in 20 ms: the limit is never reached, so nothing is learnt
    # about capacity and the limit holds (a burst after it is admitted as before).
    one_client(500)
    assert limit.limit == settled
    assert limit.retry_after_s == 1  # nobody is waiting any more

    # A server far slower than the target: never under min_limit.
    _overload(limit, clock, clients=64, capacity=1, seconds=60)
    assert limit.limit == 4
    # A fast one: never over max_limit.
    fast = _limit(clock := _Clock(), max_limit=32)
    _overload(fast, clock, clients=256, capacity=1000, seconds=20)
    assert fast.limit == 32


def test_errors_free_their_slot_without_counting_as_answers() -> None:
    clock = _Clock()
    limit = _limit(clock, min_limit=1, max_limit=1)
    started = limit.acquire()
    assert started is not None and limit.acquire() is None
    clock.now += 5
    limit.release(started, answered=False)
    assert limit.in_flight == 0 and limit.throughput == 0
    assert limit.acquire() is not None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="min_limit <= max_limit"):
        AdaptiveLimit(target_latency_s=0.5, min_limit=8, max_limit=4, max_retry_after_s=10)


def test_the_config_builds_the_limit_or_turns_it_off() -> None:
    config = load_config(
        profile="offline",
        overrides={"serve.admission_target_latency_s": 0.25, "serve.admission_max_in_flight": 9},
    )
    limit = search_admission(config)
    assert (limit.target_latency_s, limit.max_limit, limit.limit) == (0.25, 9, 9)
    off = load_config(profile="offline", overrides={"serve.admission_target_latency_s": 0})
    assert search_admission(off) is None


class _HeldEncoder(FakeEncoder):
    """The encoder's handle, holding each text query until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        encoder = self

        class _Held:
            async def remote(self, text: str, spaces: tuple[str, ...]) -> dict:
                encoder.started.set()
                await encoder.release.wait()
                return {s: [1.0, 0.0] for s in spaces}

        self.encode_text = _Held()


async def _post(app: Any, path: str, body: dict, *, readable: bool = True) -> dict[str, Any]:
    """One ASGI request; ``readable=False``: reading the body fails the test."""
    payload = json.dumps(body).encode()
    sent: list[dict] = []
    reads = 0

    async def receive() -> dict:
        nonlocal reads
        reads += 1
        if not readable:
            raise AssertionError("the body of a refused request was read")
        if reads == 1:
            return {"type": "http.request", "body": payload, "more_body": False}
        await asyncio.Event().wait()  # then nothing more until the response is sent
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode())],
    }  # fmt: skip
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return {"status": start["status"], "headers": dict(start["headers"]), "json": json.loads(body)}


def test_a_search_past_the_limit_gets_503_and_retry_after_before_its_body_is_read() -> None:
    config = load_config(profile="offline")
    encoder = _HeldEncoder()
    service = SearchService(config, encoder, FakeRetriever())
    limit = AdaptiveLimit(target_latency_s=0.5, min_limit=1, max_limit=1, max_retry_after_s=10)
    app = create_api(service, search_limit=limit)

    async def scenario() -> tuple[dict, dict, dict]:
        first = asyncio.create_task(_post(app, "/v1/search", {"query": "notes"}))
        await asyncio.wait_for(encoder.started.wait(), 30)
        assert limit.in_flight == 1
        refused = await _post(app, "/v1/search", {"query": "notes"}, readable=False)
        encoder.release.set()
        admitted = await asyncio.wait_for(first, 30)
        again = await _post(app, "/v1/search", {"query": "notes"})  # the slot is free again
        return admitted, refused, again

    admitted, refused, again = asyncio.run(scenario())
    assert admitted["status"] == 200 and admitted["json"]["hits"][0]["chunk_id"] == "c1"
    assert refused["status"] == 503
    assert refused["headers"][b"retry-after"] == b"1"
    assert refused["json"] == {
        "error": "the server is at capacity (1 searches in progress); retry in 1 s"
    }
    assert again["status"] == 200
    assert limit.in_flight == 0
