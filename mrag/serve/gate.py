"""The HTTP edge of the API: the request gate (auth, body limit), search and answer admission,
the drain gate of a shutdown, and every error rendered as ``{"error": "..."}``.

ASGI middleware and FastAPI exception handlers only: what a request must pass before a route
runs, and how whatever went wrong is said. No Ray, no database, no models.

Order, outermost first: :class:`DrainGate` → :class:`AdmissionGate` (``/v1/search``) →
:class:`AnswerAdmission` (``/v1/answer``) → :class:`RequestGate` (token, body) → the routes. A
refusal for overload is decided before anything reads the request's body.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Protocol

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from mrag.retrieve.search import describe_error
from mrag.serve.api import ErrorResponse

if TYPE_CHECKING:
    from collections.abc import Callable

    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from mrag.serve.shutdown import DrainState

log = logging.getLogger(__name__)

#: Paths under this prefix need the bearer token (when one is set) and obey the body limit.
API_PREFIX = "/v1/"

_ERROR_STATUSES = {
    400: "Malformed request: not JSON, an unknown field, a bad value (the message names the "
    "field), or an image that cannot be decoded.",
    401: "Missing or wrong bearer token (only when the server has one).",
    409: "The database cannot answer this yet, e.g. full-text search before `mrag index`.",
    413: "Request body over the server's `serve.max_body_bytes`.",
    500: "Not the request's fault; the server log has the details.",
    502: "The generator (e.g. an OpenAI-compatible endpoint) failed to answer.",
    503: "Overloaded: the server is at the capacity it measured, a deployment's queue "
    "(`serve.max_queued_requests`) is full, or the server is shutting down; retry after the "
    "`Retry-After` header's seconds.",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    **{
        status: {"model": ErrorResponse, "description": text}
        for status, text in _ERROR_STATUSES.items()
    },
    # Also keeps FastAPI from documenting its 422, which this API never answers.
    "default": {"model": ErrorResponse, "description": "Any other error, in the same shape."},
}


class ApiError(Exception):
    """A client error with its HTTP status; rendered as ``{"error": message}``.

    ``retry_after_s``: sent as ``Retry-After`` (whole seconds), for a 503 the client should
    retry.
    """

    def __init__(self, status_code: int, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.retry_after_s = retry_after_s

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status_code == 401 else {}
        if self.retry_after_s is not None:
            headers["Retry-After"] = str(self.retry_after_s)
        return JSONResponse(
            {"error": self.message}, status_code=self.status_code, headers=headers or None
        )


class RequestGate:
    """Auth and the body limit for ``/v1/``, before anything parses the body (ASGI middleware).

    A middleware and not a FastAPI dependency because FastAPI reads and parses a body before it
    runs dependencies: here a request without the token gets 401 without its body being read,
    and one over the limit gets 413 by its ``Content-Length`` before reading, or by a running
    count while streaming (chunked uploads, clients whose header understates the body). The body
    is then handed on as one message, with ``Content-Type: application/json``: the API reads
    every body as JSON, as it always has, and ``curl -d`` sends a form content type by default.
    """

    def __init__(self, app: ASGIApp, *, api_token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self._token = (api_token or "").encode() or None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _route_path(scope).startswith(API_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            self._authorize(headers)
            body = await self._read_body(headers, receive)
        except ApiError as exc:
            await exc.response()(scope, receive, send)
            return
        if body is None:  # the client went away
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        json_headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        json_headers.append((b"content-type", b"application/json"))
        await self.app({**scope, "headers": json_headers}, replay, send)

    def _authorize(self, headers: Headers) -> None:
        if self._token is None:
            return
        scheme, _, presented = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(presented.strip().encode(), self._token):
            raise ApiError(401, "invalid bearer token")

    async def _read_body(self, headers: Headers, receive: Receive) -> bytes | None:
        limit = self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            try:
                declared_bytes = int(declared)
            except ValueError:
                raise ApiError(400, "Content-Length header is not an integer") from None
            if declared_bytes > limit:
                raise ApiError(
                    413, f"request body is {declared_bytes} bytes; the limit is {limit} bytes"
                )
        parts: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            part = message.get("body", b"")
            received += len(part)
            if received > limit:
                raise ApiError(413, f"request body is over the limit of {limit} bytes")
            parts.append(part)
            if not message.get("more_body", False):
                return b"".join(parts)


class DrainGate:
    """Counts every HTTP request this replica has in flight and, once it drains for a shutdown
    (:mod:`mrag.serve.shutdown`), refuses new ones at once: 503 with ``Connection: close`` and
    ``Retry-After``, ``/healthz`` included, so a load balancer takes the replica out while the
    requests it already admitted finish. Outermost middleware: nothing runs before it."""

    def __init__(self, app: ASGIApp, *, state: DrainState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.state.admit():
            refusal = JSONResponse(
                {"error": "the server is shutting down; retry in a moment"},
                status_code=503,
                headers={"Connection": "close", "Retry-After": "1"},
            )
            await refusal(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.done()


class AdaptiveLimit:
    """How many requests of one kind an ingress replica works on at once, following the
    capacity it measures (no Ray, no configuration of the machine).

    Little's law: with N requests in flight answered at X per second, each spends N / X in the
    replica. So the limit is X × ``target_latency_s``: when the replica is the bottleneck, the
    requests it admits wait about the target, and every other one is refused at once rather
    than queued. X is measured over windows of ``window_s`` (at least ``min_samples``
    answers): more cores, replicas or a GPU behind the ingress raise X, and the limit with it.

    Per window: when the answers' mean latency L is over the target, the limit becomes
    X × target (the requests in flight times target / L: a window just over the target trims
    it a little, a flood cuts it in one step, whatever the limit was); when L is within the
    target and the limit was reached (a refusal, or that many in flight), it rises towards
    X × target, at most doubling per window; otherwise it holds (an idle replica says nothing
    about its capacity, so a burst after a quiet spell is still admitted). Always within
    [``min_limit``, ``max_limit``]; it starts at ``max_limit``.

    Retry-After: the clients refused recently are estimated as (refusals per second) × (the
    Retry-After they were given), and told to come back when the replica will have served that
    many (their number / X), at least 1 s and at most ``max_retry_after_s``. Clients that honour
    it come back about as fast as they can be served, so refusals stay a small share of the
    work whatever the number of clients; one that retries at once is refused at once.

    Used from one event loop only (an ASGI middleware); ``clock`` is for tests.
    """

    def __init__(
        self,
        *,
        target_latency_s: float,
        min_limit: int,
        max_limit: int,
        max_retry_after_s: int,
        window_s: float = 1.0,
        min_samples: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (target_latency_s > 0 and 0 < min_limit <= max_limit and max_retry_after_s >= 1):
            raise ValueError(
                "AdaptiveLimit needs target_latency_s > 0, 0 < min_limit <= max_limit and "
                f"max_retry_after_s >= 1; got {target_latency_s}, {min_limit}, {max_limit}, "
                f"{max_retry_after_s}"
            )
        self.target_latency_s = target_latency_s
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.max_retry_after_s = max_retry_after_s
        self.window_s = window_s
        self.min_samples = min_samples
        self._clock = clock
        self.limit = float(max_limit)
        self.in_flight = 0
        self.retry_after_s = 1
        #: Last window's answers per second and their mean latency (s); 0 before any.
        self.throughput = 0.0
        self.latency_s = 0.0
        self._waiting = 0.0  # refused clients expected back (smoothed)
        self._start_window(self._clock())

    def _start_window(self, now: float) -> None:
        self._window_start = now
        self._answered = 0
        self._latency_sum = 0.0
        self._refused = 0
        self._peak = self.in_flight

    def acquire(self) -> float | None:
        """Admits one request (returns its start time for :meth:`release`), or ``None``: refuse
        it, with ``Retry-After: retry_after_s``."""
        now = self._clock()
        if self.in_flight >= int(self.limit):
            self._refused += 1
            self._maybe_adjust(now)
            return None
        self.in_flight += 1
        self._peak = max(self._peak, self.in_flight)
        return now

    def release(self, started: float, *, answered: bool = True) -> None:
        """One admitted request is over; ``answered``: it succeeded (a 2xx), so its latency
        counts. Errors free their slot without counting: a quick 400 says nothing about how
        long a search takes."""
        now = self._clock()
        self.in_flight -= 1
        if answered:
            self._answered += 1
            self._latency_sum += now - started
        self._maybe_adjust(now)

    def _maybe_adjust(self, now: float) -> None:
        elapsed = now - self._window_start
        if elapsed < self.window_s or (
            self._answered < self.min_samples and elapsed < 10 * self.window_s
        ):
            return
        refused_per_s = self._refused / elapsed
        if self._answered:
            self.throughput = self._answered / elapsed
            self.latency_s = self._latency_sum / self._answered
            ideal = self.throughput * self.target_latency_s
            reached = self._refused > 0 or self._peak >= int(self.limit)
            if self.latency_s > self.target_latency_s:
                limit = ideal
            elif reached:
                limit = max(self.limit, min(ideal, 2 * self.limit))
            else:
                limit = self.limit
            limit = min(float(self.max_limit), max(float(self.min_limit), limit))
            if int(limit) != int(self.limit):
                log.debug(
                    "admission limit %d -> %d (%.1f/s answered, mean %.0f ms, %.1f/s refused)",
                    int(self.limit), int(limit), self.throughput, self.latency_s * 1000,
                    refused_per_s,
                )  # fmt: skip
            self.limit = limit
        # Smoothed over about a window: a quiet spell forgets the clients refused before it.
        keep = 0.5 ** (elapsed / self.window_s)
        self._waiting = keep * self._waiting + (1 - keep) * refused_per_s * self.retry_after_s
        if self.throughput > 0:
            wait_s = math.ceil(self._waiting / self.throughput)
            self.retry_after_s = min(self.max_retry_after_s, max(1, wait_s))
        self._start_window(now)

    def stats(self) -> dict[str, float]:
        """The limit, requests in flight, Retry-After and the last window's figures."""
        return {
            "limit": int(self.limit),
            "in_flight": self.in_flight,
            "retry_after_s": self.retry_after_s,
            "answered_per_s": round(self.throughput, 2),
            "mean_latency_ms": round(self.latency_s * 1000, 1),
        }


class AdmissionGate:
    """503 with ``Retry-After`` for a ``POST`` to a limited route while its
    :class:`AdaptiveLimit` is reached, before the body is read or anything else runs: the
    cheapest refusal this replica can make (Serve's proxy still relays it)."""

    def __init__(self, app: ASGIApp, *, limits: dict[str, AdaptiveLimit]) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = None
        if scope["type"] == "http" and scope["method"] == "POST":
            limit = self.limits.get(_route_path(scope))
        if limit is None:
            await self.app(scope, receive, send)
            return
        started = limit.acquire()
        if started is None:
            refusal = ApiError(
                503,
                f"the server is at capacity ({limit.in_flight} searches in progress); retry in "
                f"{limit.retry_after_s} s",
                retry_after_s=limit.retry_after_s,
            )
            await refusal.response()(scope, receive, send)
            return
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            limit.release(started, answered=200 <= status < 300)


class Admits(Protocol):
    """What :class:`AnswerAdmission` reads of an answer service (``AnswerService``)."""

    in_flight: int
    max_in_flight: int

    def refusal(self) -> str: ...


class AnswerAdmission:
    """503 for ``POST /v1/answer`` while this replica's answers are at their limit, before the
    request's body is read or anything else runs: under a burst, a refusal costs the least
    work the server can do. (:meth:`AnswerService._admit` still counts the admitted ones.)"""

    def __init__(self, app: ASGIApp, *, answers: Admits) -> None:
        self.app = app
        self.answers = answers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.answers.in_flight >= self.answers.max_in_flight
            and _route_path(scope) == "/v1/answer"
        ):
            refusal = ApiError(503, self.answers.refusal(), retry_after_s=1)
            await refusal.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path below the application's route prefix (Serve's ``root_path``)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def describe_request_error(error: dict[str, Any]) -> str:
    """One of FastAPI's request validation errors → one sentence naming the field."""
    loc = tuple(error.get("loc", ()))
    if loc[:1] == ("body",):
        loc = loc[1:]
    if error["type"] == "json_invalid":
        where = f" (at character {loc[0]})" if loc else ""
        return f"request body is not valid JSON: {error.get('ctx', {}).get('error')}{where}"
    if error["type"] == "missing" and not loc:
        return 'request body is empty; send a JSON object such as {"query": "a red car"}'
    return describe_error({**error, "loc": loc})


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return exc.response()


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"error": describe_request_error(exc.errors()[0])}, status_code=400)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Routing errors (404, 405) and FastAPI's own, in the same ``{"error": ...}`` shape."""
    message = str(exc.detail)
    if exc.status_code == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
        # FastAPI's "error parsing the body" when json.loads fails other than with a
        # JSONDecodeError: bytes that are not UTF-8, nesting deeper than the recursion limit.
        message = f"request body is not valid JSON: {exc.__cause__}"
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Anything unexpected: JSON 500. Starlette re-raises afterwards, so the traceback is logged."""
    return JSONResponse(
        {"error": f"internal error ({type(exc).__name__}); the server log has the details"},
        status_code=500,
    )


async def _overloaded(request: Request, exc: Exception) -> JSONResponse:
    """A downstream deployment's queue is full (``BackPressureError``): refuse now, not later."""
    return JSONResponse(
        {"error": "the service is overloaded (a queue is full); retry later"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def _generator_failed(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=502)
