"""What ``POST /v1/answer`` does once a request is valid: search, refine, generate, cite.

The search is the ingress's own (:class:`~mrag.serve.search.SearchService`, so an answer obeys
every limit and filter of ``/v1/search``); the refiner runs here (cheap, no model); the
generator is its own deployment, called through a streaming handle. A stream is server-sent
events, each ``event: <type>`` with one JSON ``data:`` line:

- ``hits`` ``{"hits": [...]}`` — as ``/v1/search`` returns them, first;
- ``delta`` ``{"text": "..."}`` — the answer's text as it is generated;
- ``citations`` ``{"citations": [...], "dropped_citations": n}`` — every cited evidence item,
  with the ``chunk_id`` of a returned hit;
- ``done`` ``{"answer": "...", "generator": "...", "took_ms": ...}`` — last;
- ``error`` ``{"error": "..."}`` — instead of the rest, when generation fails midway.

Errors found before anything is sent (a bad request, a full queue, a database that cannot
answer) are ordinary JSON errors with their status codes, not events.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from mrag.answers import evidence_search, question_of, refine_hits, with_chunk_id
from mrag.serve.api import AnswerResponse, SearchHit
from mrag.serve.gate import ApiError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mrag.answers import AnswerRequest
    from mrag.serve.search import SearchService

log = logging.getLogger(__name__)


class AnswerService:
    """``/v1/answer`` over a :class:`SearchService` and the generator deployment's handle
    (anything whose ``options(stream=True).answer.remote(question, evidence)`` is an async
    iterator of the :class:`~mrag.serve.generator.GeneratorDeployment`'s events)."""

    def __init__(self, search: SearchService, generator: Any, *, max_in_flight: int = 16) -> None:
        self.search = search
        self.generator = generator
        self.max_in_flight = max_in_flight
        self.in_flight = 0

    def _admit(self) -> None:
        """Refuses at once (503) past ``max_in_flight`` answers in this replica: an answer holds
        the generator for up to seconds, so admitting more only queues them into time-outs."""
        if self.in_flight >= self.max_in_flight:
            raise ApiError(503, self.refusal(), retry_after_s=1)
        self.in_flight += 1

    def refusal(self) -> str:
        return (
            f"too many answers in progress ({self.in_flight}, serve.max_answers_in_flight); "
            "retry later"
        )

    async def _prepare(self, request: AnswerRequest) -> tuple[list[dict[str, Any]], Any]:
        hits = await self.search.hits(evidence_search(request))
        evidence = refine_hits(self.search.config, hits)
        shown = [
            SearchHit.from_hit(hit, include_thumbnail=request.include_thumbnail).model_dump(
                exclude_none=True
            )
            for hit in hits
        ]
        stream = self.generator.options(stream=True).answer.remote(question_of(request), evidence)
        return shown, stream

    async def answer(self, request: AnswerRequest) -> AnswerResponse:
        """The whole answer as one JSON object."""
        started = time.perf_counter()
        self._admit()
        try:
            hits, stream = await self._prepare(request)
            async for event in stream:
                if event["type"] == "error":
                    raise GeneratorFailed(event["error"])
                if event["type"] == "done":
                    result = event["answer"]
        finally:
            self.in_flight -= 1
        return AnswerResponse(
            answer=result["answer"],
            citations=[with_chunk_id(c) for c in result["citations"]],
            dropped_citations=result["dropped_citations"],
            hits=hits,
            generator=result["generator"],
            took_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def events(self, request: AnswerRequest) -> AsyncIterator[bytes]:
        """Searches now (so its errors are HTTP errors), then returns the SSE byte stream."""
        started = time.perf_counter()
        self._admit()
        try:
            hits, stream = await self._prepare(request)
        except BaseException:
            self.in_flight -= 1
            raise

        async def sse() -> AsyncIterator[bytes]:
            try:
                yield _event("hits", {"hits": hits})
                async for event in stream:
                    kind = event["type"]
                    if kind == "delta":
                        yield _event("delta", {"text": event["text"]})
                    elif kind == "error":
                        yield _event("error", {"error": event["error"]})
                        return
                    elif kind == "done":
                        result = event["answer"]
                        citations = [with_chunk_id(c) for c in result["citations"]]
                        yield _event(
                            "citations",
                            {
                                "citations": citations,
                                "dropped_citations": result["dropped_citations"],
                            },
                        )
                        took_ms = round((time.perf_counter() - started) * 1000, 1)
                        done = {"answer": result["answer"], "generator": result["generator"]}
                        yield _event("done", {**done, "took_ms": took_ms})
            except Exception as exc:  # noqa: BLE001 - the status line is sent: say it in-band
                log.exception("answer stream failed")
                yield _event("error", {"error": _stream_error(exc)})
            finally:
                self.in_flight -= 1

        return sse()


class GeneratorFailed(Exception):
    """The generator deployment reported a failure (an endpoint's error): a 502 for JSON."""


def _stream_error(exc: Exception) -> str:
    from ray.serve.exceptions import BackPressureError

    if isinstance(exc, BackPressureError):
        return "the generator is overloaded (its queue is full); retry later"
    return f"internal error ({type(exc).__name__}); the server log has the details"


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
