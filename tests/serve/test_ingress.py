"""The FastAPI app without Ray: the request gate, the published schema and JSON for every error.

The app is built as each Serve replica builds it (:func:`mrag.serve.ingress.create_api`), around a
stand-in for the encoder deployment's handle and a retriever that can be made to fail.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient

from mrag.config import load_config
from mrag.errors import MragError
from mrag.retrieve.search import Hit
from mrag.serve.ingress import SearchService, create_api

if TYPE_CHECKING:
    from collections.abc import Callable

TOKEN = "unit-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_K = 7


class _Method:
    """``handle.method.remote(...)`` of a DeploymentHandle: returns an awaitable."""

    def __init__(self, compute: Callable[..., Any]) -> None:
        self.compute = compute

    async def remote(self, *args: Any) -> Any:
        return self.compute(*args)


_TEXT_VECTORS = {"clip": [1.0, 0.0], "text_vec": [0.0, 1.0]}


class FakeEncoder:
    encode_text = _Method(lambda text, spaces: {s: _TEXT_VECTORS[s] for s in spaces})
    encode_image = _Method(lambda pixels, spaces: {s: [0.5, 0.5] for s in spaces})


class FakeRetriever:
    """Answers one hit, or raises ``failure`` when set."""

    def __init__(self) -> None:
        self.failure: Exception | None = None
        self.calls: list[dict[str, Any]] = []

    def plan(self, *, filters: Any = None, **kwargs: Any):
        from mrag.config import RetrievalConfig
        from mrag.retrieve.plan import build_plan

        return build_plan(
            RetrievalConfig(), {"clip": False, "text_vec": False, "bm25": False}, **kwargs
        )

    def search(self, mode: str, **kwargs: Any) -> list[Hit]:
        # As the real one: a vector still being computed is a Future (awaited in this thread).
        vectors = kwargs.get("vectors") or {}
        kwargs["vectors"] = {
            k: v.result() if isinstance(v, Future) else v for k, v in vectors.items()
        }
        self.calls.append({"mode": mode, **kwargs})
        if self.failure is not None:
            raise self.failure
        return [Hit(chunk_id="c1", asset_id="a1", uri="/notes.txt", modality="text", score=0.9)]


@pytest.fixture
def retriever() -> FakeRetriever:
    return FakeRetriever()


@pytest.fixture
def client(retriever: FakeRetriever) -> TestClient:
    config = load_config(
        profile="offline", overrides={"serve.max_k": MAX_K, "serve.max_body_bytes": 4096}
    )
    app = create_api(SearchService(config, FakeEncoder(), retriever), api_token=TOKEN)
    # raise_server_exceptions=False: see what a client gets, as over HTTP.
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _error(response: Any) -> str:
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"], body
    return body["error"]


def test_a_valid_search_reaches_the_retriever(client: TestClient, retriever) -> None:
    response = client.post("/v1/search", json={"query": "notes", "k": 3}, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json()["hits"] == [
        {"chunk_id": "c1", "asset_id": "a1", "uri": "/notes.txt", "modality": "text", "score": 0.9}
    ]
    (call,) = retriever.calls
    # rerank.enabled is on by default: the retriever is asked for the deeper candidate pool
    assert (call["mode"], call["k"], call["text"]) == ("hybrid", 50, "notes")
    assert {k: v.tolist() for k, v in call["vectors"].items()} == _TEXT_VECTORS
    no_rerank = {"query": "notes", "k": 3, "rerank": False}
    assert client.post("/v1/search", json=no_rerank, headers=AUTH).status_code == 200
    assert retriever.calls[-1]["k"] == 3


def test_an_internal_error_is_a_json_500(client: TestClient, retriever) -> None:
    retriever.failure = RuntimeError("disk on fire at /secret/path")
    response = client.post("/v1/search", json={"query": "notes"}, headers=AUTH)
    assert response.status_code == 500
    message = _error(response)
    assert "RuntimeError" in message and "/secret/path" not in message


def test_a_database_not_ready_is_409(client: TestClient, retriever) -> None:
    retriever.failure = MragError("no full-text index yet; run `mrag index --db ...`")
    response = client.post("/v1/search", json={"query": "x", "mode": "fts"}, headers=AUTH)
    assert response.status_code == 409
    assert "mrag index" in _error(response)


def test_the_token_is_checked_before_the_body_is_read(client: TestClient, retriever) -> None:
    for body in (b"{not json", b"x" * 10_000):
        response = client.post("/v1/search", content=body)
        assert response.status_code == 401
        assert "bearer token" in _error(response)
    assert retriever.calls == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"", "request body is empty"),
        (b"[1, 2]", "request body must be a JSON object, got list"),
        (b'{"query": "x", "k": 8}', f"k must be an integer from 1 to {MAX_K}, got 8"),
        (b'{"query": "x", "k": null}', "k must be an integer"),
        (b'{"query": "x", "filters": {"page": "2"}}', "filters.page must be a page number"),
    ],
)
def test_bad_bodies_are_400_naming_the_problem(client: TestClient, body: bytes, words) -> None:
    response = client.post(
        "/v1/search", content=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert words in _error(response)


def test_bodies_are_json_whatever_the_content_type(client: TestClient) -> None:
    """``curl -d '{"query": ...}'`` sends application/x-www-form-urlencoded."""
    form = {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    response = client.post("/v1/search", content=b'{"query": "x"}', headers=form)
    assert response.status_code == 200, response.text


def test_openapi_publishes_the_search_request_and_no_422(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operation = spec["paths"]["/v1/search"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SearchRequest"
    }
    request_schema = spec["components"]["schemas"]["SearchRequest"]
    assert request_schema["properties"]["k"]["maximum"] == MAX_K
    assert request_schema["additionalProperties"] is False
    assert {"400", "401", "413", "500"} <= set(operation["responses"])
    assert "422" not in operation["responses"]
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    assert operation["responses"]["400"]["content"]["application/json"]["schema"] == error_ref
    assert operation["security"] == [{"HTTPBearer": []}]
    assert client.get("/docs").status_code == 200


class _HeldGenerator:
    """The generator deployment's streaming handle, holding each answer until released."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.started = threading.Event()

    def options(self, stream: bool) -> _HeldGenerator:
        return self

    @property
    def answer(self) -> _HeldGenerator:
        return self

    def remote(self, question: str, evidence: list) -> Any:
        import asyncio

        async def events():
            self.started.set()
            await asyncio.to_thread(self.release.wait, 30)
            answer = {"answer": "Notes [1].", "dropped_citations": 0, "generator": "held"}
            citation = {"n": 1, "chunk_ids": ["c1"], "asset_id": "a1", "uri": "/notes.txt",
                        "modality": "text"}  # fmt: skip
            yield {"type": "done", "answer": {**answer, "citations": [citation]}}

        return events()


def test_answers_past_the_in_flight_limit_are_refused_at_once(retriever) -> None:
    import threading

    from mrag.serve.answer import AnswerService

    config = load_config(profile="offline", overrides={"serve.max_answers_in_flight": 1})
    service = SearchService(config, FakeEncoder(), retriever)
    generator = _HeldGenerator()
    app = create_api(service, answers=AnswerService(service, generator, max_in_flight=1))
    with TestClient(app, raise_server_exceptions=False) as client:
        first: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: first.update(r=client.post("/v1/answer", json={"query": "notes"}))
        )
        worker.start()
        assert generator.started.wait(30)
        refused = client.post("/v1/answer", json={"query": "notes", "stream": True})
        assert refused.status_code == 503 and "too many answers" in _error(refused)
        generator.release.set()
        worker.join(30)
        assert first["r"].status_code == 200, first["r"].text
        assert first["r"].json()["citations"][0]["chunk_id"] == "c1"
        # The slot is free again.
        assert client.post("/v1/answer", json={"query": "notes"}).status_code == 200
