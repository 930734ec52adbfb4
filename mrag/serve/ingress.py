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
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.security import HTTPBearer
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from mrag.answers import answer_request_model
from mrag.config import MragConfig
from mrag.models import get_model_spec
from mrag.retrieve.search import Retriever
from mrag.serve.answer import AnswerService, GeneratorFailed
from mrag.serve.api import AnswerResponse, HealthResponse, SearchResponse, search_request_model
from mrag.serve.gate import (
    ERROR_RESPONSES,
    AdaptiveLimit,
    AdmissionGate,
    AnswerAdmission,
    ApiError,
    DrainGate,
    RequestGate,
    _api_error,
    _generator_failed,
    _http_error,
    _internal_error,
    _overloaded,
    _validation_error,
)
from mrag.serve.search import SearchService
from mrag.serve.shutdown import DrainState, watch_for_drain

__all__ = ["SearchIngress", "SearchService", "create_api"]

log = logging.getLogger(__name__)

#: The search page and its files (``GET /``).
STATIC_DIR = Path(__file__).resolve().parent / "static"


def create_api(
    service: SearchService,
    *,
    api_token: str | None = None,
    answers: AnswerService | None = None,
    drain: DrainState | None = None,
    search_limit: AdaptiveLimit | None = None,
) -> FastAPI:
    """The FastAPI app over ``service``; ``api_token`` (``None`` or empty: off) guards ``/v1/``;
    ``answers`` adds ``POST /v1/answer``; ``drain`` counts requests in flight and refuses new
    ones once a shutdown drains this replica; ``search_limit`` admits ``/v1/search`` (default:
    :func:`search_admission` of the config; none when ``serve.admission_target_latency_s`` is
    0). ``GET /`` is the search page.

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
    if answers is not None:  # added after the gate: runs first, before the body is even read
        app.add_middleware(AnswerAdmission, answers=answers)
    search_limit = search_limit or search_admission(config)
    if search_limit is not None:
        app.add_middleware(AdmissionGate, limits={"/v1/search": search_limit})
    if drain is not None:  # added last: runs first of all, so every request is counted
        app.add_middleware(DrainGate, state=drain)
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


def search_admission(config: MragConfig) -> AdaptiveLimit | None:
    """The ``/v1/search`` admission limit ``serve.admission_*`` describe (one per replica)."""
    serve_config = config.serve
    if not serve_config.admission_target_latency_s:
        return None
    return AdaptiveLimit(
        target_latency_s=serve_config.admission_target_latency_s,
        min_limit=serve_config.admission_min_in_flight,
        max_limit=serve_config.admission_max_in_flight,
        max_retry_after_s=serve_config.admission_max_retry_after_s,
    )


def _check_vector_widths(retriever: Retriever, config: MragConfig) -> None:
    """Fails the replica at start-up, not per request, when the DB was built by another model."""
    from mrag.store import schema

    if retriever.store.open(schema.CHUNKS) is None:
        log.warning("%s has no chunks table yet; searches return no hits", retriever.store.db_uri)
        return
    retriever.store.check_vector_widths(
        {c: get_model_spec(config.space_model(c)).embed_dim for c in config.active_spaces()}
    )


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
        reranker: handle to the :class:`~mrag.serve.reranker.RerankerDeployment`; ``None``:
            the configured reranker, if any, runs in this replica.
        generator: handle to the :class:`~mrag.serve.generator.GeneratorDeployment`; ``None``:
            no ``/v1/answer``.
        searcher: handle to the :class:`~mrag.serve.retriever.RetrieverDeployment`; ``None``:
            this replica searches the database itself.
        drain_coordinator: ``mrag serve``'s :class:`~mrag.serve.shutdown.DrainCoordinator`
            actor: on its word the replica stops admitting and reports its requests in flight
            (a clean shutdown); ``None`` (``serve run``, ``serve deploy``): Serve's own.
    """

    async def __init__(
        self,
        config: MragConfig,
        encoder: Any,
        api_token: str | None = None,
        reranker: Any = None,
        generator: Any = None,
        searcher: Any = None,
        drain_coordinator: Any = None,
    ) -> None:
        from mrag.ray_runtime import bind_serve_replica_to_node_address

        bind_serve_replica_to_node_address()  # before Serve starts the replica's gRPC server

        from mrag.query import build_reranker

        retriever = Retriever.for_config(config)
        _check_vector_widths(retriever, config)
        # No CLIP model here either: the query's vectors come from the encoder deployment.
        local_reranker = build_reranker(config, None, retriever) if reranker is None else None
        self.service = SearchService(
            config, encoder, retriever, reranker, searcher, local_reranker=local_reranker
        )
        self.answers = None
        if generator is not None:
            self.answers = AnswerService(
                self.service, generator, max_in_flight=config.serve.max_answers_in_flight
            )
        self._api_token = api_token or None
        self.search_limit = search_admission(config)
        self.drain = DrainState()
        self._drain_watch = None
        if drain_coordinator is not None:
            self._drain_watch = asyncio.get_running_loop().create_task(
                watch_for_drain(drain_coordinator, self.drain, uuid.uuid4().hex)
            )
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

    def admission(self) -> dict[str, float]:
        """This replica's ``/v1/search`` admission (:meth:`AdaptiveLimit.stats`); ``{}`` when
        off. For operators and ``bench/serve_load.py``."""
        return {} if self.search_limit is None else self.search_limit.stats()

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve calls this once per replica, after ``__init__``: the app this replica serves."""
        return create_api(
            self.service,
            api_token=self._api_token,
            answers=self.answers,
            drain=self.drain,
            search_limit=self.search_limit,
        )
