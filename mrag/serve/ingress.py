"""The HTTP front door: the FastAPI app (routes, request gate, JSON errors) and its deployment.

:func:`create_api` builds the app around a :class:`SearchService` (decode → encode → retrieve);
:class:`SearchIngress` is the Serve deployment that builds one per replica, after its own
``__init__``, through Serve's late-bound ingress (``@serve.ingress()`` plus
``__serve_build_asgi_app__``), so routes close over that replica's config, token and handles.

Every answer other than a 2xx is ``{"error": "<what is wrong and how to fix it>"}``: 400 for a
malformed request (pydantic's errors, turned into one sentence naming the field), 401, 413, 409,
404/405 for routing, and 500 for anything unexpected. 422 is never used.

No ``from __future__ import annotations`` here, unlike the rest of mrag: FastAPI reads route
annotations to know what to validate, and the search route's body type is made per server (its
``k`` is bounded by ``serve.max_k``), a local name a string annotation could not be resolved from.
"""

import asyncio
import hmac
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer
from ray import serve
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mrag.answers import answer_request_model
from mrag.config import MragConfig
from mrag.errors import DecodeError, MragError
from mrag.models import get_model_spec
from mrag.query import candidate_depth, decode_query_image, finish_hits, wants_rerank
from mrag.refine import RefineSettings, group_by_asset, refine
from mrag.retrieve.hits import Hit
from mrag.retrieve.search import Retriever, describe_error
from mrag.serve.answer import AnswerService, GeneratorFailed
from mrag.serve.api import (
    AnswerResponse,
    AssetEvidence,
    ErrorResponse,
    HealthResponse,
    SearchHit,
    SearchRequest,
    SearchResponse,
    search_request_model,
)

log = logging.getLogger(__name__)

#: ``group: "asset"``: the refiner without its evidence budget (a search shows every asset).
GROUP_REFINE = RefineSettings(max_tokens=10**9, max_images=10**6)
#: The search page and its files (``GET /``).
STATIC_DIR = Path(__file__).resolve().parent / "static"
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
    503: "Overloaded: a deployment's queue (`serve.max_queued_requests`) is full; retry later.",
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
    """A client error with its HTTP status; rendered as ``{"error": message}``."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status_code == 401 else None
        return JSONResponse({"error": self.message}, status_code=self.status_code, headers=headers)


class SearchService:
    """What ``/v1/search`` does once a request is valid, without HTTP or Ray.

    Args:
        config: the whole config (models, decoding limits).
        encoder: the :class:`~mrag.serve.encoder.QueryEncoder` deployment's handle: anything
            whose ``encode_text``, ``encode_query``, ``encode_image`` (and
            ``encode_text_spaces``: both text vectors) have a ``.remote(...)`` returning an
            awaitable vector.
        retriever: plans each query (which encoders to call); searches the database itself, in a
            worker thread (LanceDB calls block), when there is no ``searcher``.
        reranker: the :class:`~mrag.serve.reranker.RerankerDeployment`'s handle (anything
            whose ``rerank.remote(query, hits)`` is awaitable), used when a search reranks;
            ``None``: no reranking.
    """

    def __init__(
        self,
        config: MragConfig,
        encoder: Any,
        retriever: Retriever,
        reranker: Any = None,
        searcher: Any = None,
    ) -> None:
        self.config = config
        self.encoder = encoder
        self.retriever = retriever
        self.reranker = reranker
        self.searcher = searcher

    async def search(self, request: SearchRequest) -> SearchResponse:
        started = time.perf_counter()
        pool = await self.ranked_pool(request)
        hits = finish_hits(request, pool, rerank=False)
        groups = None
        if request.group == "asset":
            groups = [
                AssetEvidence.from_group(group, include_thumbnail=request.include_thumbnail)
                for group in group_by_asset(refine(pool, GROUP_REFINE))[: request.k]
            ]
        return SearchResponse(
            hits=[
                SearchHit.from_hit(hit, include_thumbnail=request.include_thumbnail) for hit in hits
            ],
            groups=groups,
            took_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def hits(self, request: SearchRequest) -> list[Hit]:
        """The request's top ``k`` hits: plan → encode → retrieve → rerank → group."""
        return finish_hits(request, await self.ranked_pool(request), rerank=False)

    async def ranked_pool(self, request: SearchRequest) -> list[Hit]:
        """The candidate pool (deeper than ``k`` when reranking or grouping), reranked when the
        request reranks: plan → encode → retrieve → rerank.

        Raises:
            ApiError: 400 for a plan or image the server cannot use, 409 when the database
                cannot answer yet, 503 when a downstream deployment's queue is full.
        """
        try:
            plan = self.retriever.plan(
                query_kind="text" if request.query is not None else "image",
                mode=request.mode,
                filters=request.filters,
                fusion=request.fusion,
                weights=request.weights,
            )
        except MragError as exc:  # e.g. a weight for a list the server does not have
            raise ApiError(400, str(exc)) from None
        clip_vector = text_vector = None
        if request.image is not None:
            try:
                pixels = await asyncio.to_thread(decode_query_image, request.image, self.config)
            except DecodeError as exc:
                raise ApiError(400, f"image could not be decoded: {exc}") from None
            if "clip" in plan.spaces:
                clip_vector = await self.encoder.encode_image.remote(pixels)
        elif {"clip", "text_vec"} <= plan.spaces:  # both text encoders in one batched call
            vectors = await self.encoder.encode_text_spaces.remote(request.query)
            clip_vector, text_vector = vectors["clip"], vectors["text_vec"]
        elif "clip" in plan.spaces:
            clip_vector = await self.encoder.encode_text.remote(request.query)
        elif "text_vec" in plan.spaces:
            text_vector = await self.encoder.encode_query.remote(request.query)
        arguments = {
            "k": candidate_depth(request, self.config),
            "text": request.query,
            "clip_vector": _as_vector(clip_vector),
            "text_vector": _as_vector(text_vector),
            "filters": request.filters,
            "include_thumbnail": request.include_thumbnail,
            "fusion": request.fusion,
            "weights": request.weights,
        }
        try:
            if self.searcher is not None:
                pool = await self.searcher.search.remote(request.mode, arguments)
            else:
                pool = await asyncio.to_thread(self.retriever.search, request.mode, **arguments)
        except MragError as exc:  # e.g. full-text search before any index exists
            raise ApiError(409, str(exc)) from None
        if self.reranker is not None and wants_rerank(request, self.config) and len(pool) > 1:
            from mrag.rerank import RerankQuery

            vectors = {"clip": _as_vector(clip_vector), "text_vec": _as_vector(text_vector)}
            query = RerankQuery.from_request(
                request, {k: v for k, v in vectors.items() if v is not None}
            )
            pool = await self.reranker.rerank.remote(query, pool)
        return pool

    async def warm_up(self) -> None:
        """One real query through the encoders and the retriever (models' lazy init, LanceDB
        table, index and FTS caches), so the first client request is not the slow one."""
        for body in ({"query": "warm-up", "k": 1}, {"query": "warm-up", "k": 1, "mode": "fts"}):
            request = search_request_model(self.config.serve.max_k).model_validate(body)
            try:
                await self.search(request)
            except ApiError as exc:  # e.g. no full-text index yet: the replica still serves
                log.info("warm-up query %s answered %d: %s", body, exc.status_code, exc.message)


def _as_vector(values: list[float] | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float32)


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


class AnswerAdmission:
    """503 for ``POST /v1/answer`` while this replica's answers are at their limit, before the
    request's body is read or anything else runs: under a burst, a refusal costs the least
    work the server can do. (:meth:`AnswerService._admit` still counts the admitted ones.)"""

    def __init__(self, app: ASGIApp, *, answers: AnswerService) -> None:
        self.app = app
        self.answers = answers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.answers.in_flight >= self.answers.max_in_flight
            and _route_path(scope) == "/v1/answer"
        ):
            await ApiError(503, self.answers.refusal()).response()(scope, receive, send)
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


def create_api(
    service: SearchService, *, api_token: str | None = None, answers: AnswerService | None = None
) -> FastAPI:
    """The FastAPI app over ``service``; ``api_token`` (``None`` or empty: off) guards ``/v1/``;
    ``answers`` adds ``POST /v1/answer``. ``GET /`` is the search page.

    No Ray needed: tests and other front ends can serve it with any ASGI server.
    """
    from ray.serve.exceptions import BackPressureError

    config = service.config
    request_model = search_request_model(config.serve.max_k)
    answer_model = answer_request_model(config.serve.max_k, config.generate.k)
    app = FastAPI(
        title="mrag search API",
        summary="Multimodal search over a LanceDB corpus: text or image in, ranked chunks out.",
        description=(
            "JSON in and out. When the server has a token, every `/v1/` call needs "
            '`Authorization: Bearer <token>`. Every error is `{"error": "..."}`.'
        ),
    )
    app.add_middleware(RequestGate, api_token=api_token, max_body_bytes=config.serve.max_body_bytes)
    if answers is not None:  # added last: runs first, before the body is even read
        app.add_middleware(AnswerAdmission, answers=answers)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(BackPressureError, _overloaded)
    app.add_exception_handler(GeneratorFailed, _generator_failed)
    app.add_exception_handler(Exception, _internal_error)
    # Publishes the scheme (and the "Authorize" button of /docs); RequestGate enforces it.
    bearer = [Depends(HTTPBearer(auto_error=False))] if api_token else []

    @app.get("/healthz", response_model=HealthResponse)
    async def healthz() -> HealthResponse:
        """Liveness for load balancers; needs no token, reveals no data."""
        return HealthResponse(
            clip_model=config.clip_model,
            max_k=config.serve.max_k,
            max_body_bytes=config.serve.max_body_bytes,
            auth=bool(api_token),
        )

    @app.post(
        "/v1/search",
        response_model=SearchResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        dependencies=bearer,
    )
    async def search(request: request_model) -> SearchResponse:
        """Text or image search over the corpus; hits best first."""
        return await service.search(request)

    if answers is not None:

        @app.post(
            "/v1/answer",
            response_model=AnswerResponse,
            response_model_exclude_none=True,
            responses={
                **ERROR_RESPONSES,
                200: {
                    "description": "JSON, or with `stream: true` server-sent events "
                    "(`hits`, `delta`…, `citations`, `done`; `error`).",
                    "content": {"text/event-stream": {}},
                },
            },
            dependencies=bearer,
        )
        async def answer(request: answer_model) -> Any:
            """Answers a question (or an image) from the corpus, citing the hits with `[n]`."""
            if not request.stream:
                return await answers.answer(request)
            return StreamingResponse(
                await answers.events(request),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        """The search page: one static file, no build step."""
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        """The page's own files (nothing else under the folder, no sub-paths)."""
        path = STATIC_DIR / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise StarletteHTTPException(404, f"no static file {name!r}")
        return FileResponse(path)

    return app


def _check_vector_width(retriever: Retriever, embed_dim: int) -> None:
    """Fails the replica at start-up, not per request, when the DB was built by another model."""
    from mrag.store import schema

    if retriever.store.open(schema.CHUNKS) is None:
        log.warning("%s has no chunks table yet; searches return no hits", retriever.store.db_uri)
        return
    retriever.store.check_vector_widths({"clip": embed_dim})


# Pickled by value by Serve (the module attribute is the Deployment, not the class): every global
# its methods use is a module or an importable function.
@serve.deployment(name="SearchIngress")
@serve.ingress()
class SearchIngress:
    """HTTP front door: auth, limits and validation, then encoder → retriever.

    Args:
        config: limits (``serve.max_k``, ``serve.max_body_bytes``), model and database.
        encoder: handle to the :class:`~mrag.serve.encoder.QueryEncoder` deployment.
        api_token: bearer token required on ``/v1/``; ``None`` or empty turns auth off. Passed
            as a constructor argument (read from ``MRAG_API_TOKEN`` when the app is built)
            because Serve replicas are Ray actors that do not see the builder's environment,
            and a YAML ``ray_actor_options`` replaces any ``runtime_env`` set in code.
        reranker: handle to the :class:`~mrag.serve.reranker.RerankerDeployment`, or ``None``.
        generator: handle to the :class:`~mrag.serve.generator.GeneratorDeployment`; ``None``:
            no ``/v1/answer``.
        searcher: handle to the :class:`~mrag.serve.retriever.RetrieverDeployment`; ``None``:
            this replica searches the database itself.
    """

    async def __init__(
        self,
        config: MragConfig,
        encoder: Any,
        api_token: str | None = None,
        reranker: Any = None,
        generator: Any = None,
        searcher: Any = None,
    ) -> None:
        from mrag.ray_runtime import bind_serve_replica_to_node_address

        bind_serve_replica_to_node_address()  # before Serve starts the replica's gRPC server

        retriever = Retriever.for_config(config)
        _check_vector_width(retriever, get_model_spec(config.clip_model).embed_dim)
        self.service = SearchService(config, encoder, retriever, reranker, searcher)
        self.answers = None
        if generator is not None:
            self.answers = AnswerService(
                self.service, generator, max_in_flight=config.serve.max_answers_in_flight
            )
        self._api_token = api_token or None
        # Serve reports the replica healthy only once __init__ returns: warm up first
        # (the first search after /healthz turned green took 4.5 s instead of 57 ms).
        started = time.perf_counter()
        try:
            await self.service.warm_up()
        except Exception:  # noqa: BLE001 - a replica that cannot search yet still serves health
            log.warning("warm-up query failed; the first search will pay it", exc_info=True)
        self._warm_up_ms = (time.perf_counter() - started) * 1000
        log.info(
            "SearchIngress ready over %s (auth %s, warm-up %.0f ms)",
            config.db_uri,
            "on" if self._api_token else "off",
            self._warm_up_ms,
        )

    def warm_up_ms(self) -> float:
        """How long this replica's warm-up query took before it reported healthy."""
        return self._warm_up_ms

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this once per replica, after ``__init__``: the app this replica serves."""
        return create_api(self.service, api_token=self._api_token, answers=self.answers)
