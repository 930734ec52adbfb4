"""The search API on Ray Serve: FastAPI ingress → batched query encoders → LanceDB retriever.

Start it (each loads the config the same way as the CLI)::

    mrag serve --db ./mrag-db --profile offline                 # local Ray, 127.0.0.1:8000
    MRAG_DB=./mrag-db MRAG_PROFILE=offline serve run mrag.serve.app:app
    serve run mrag.serve.app:app_builder db=./mrag-db profile=offline serve.max_k=50
    serve deploy cluster/serve.yaml                             # a running Ray cluster

HTTP API (JSON in and out):

- ``GET /healthz`` → ``{"status": "ok", ...}``; never needs a token (load-balancer probes).
- ``POST /v1/search`` with ``{"query": "a red car"}`` or ``{"image": "<base64 image bytes>"}``
  plus optional ``"k"`` (default 10, at most ``serve.max_k``), ``"mode"`` (``vector``, ``fts`` or
  ``hybrid``, the default: every embedding space plus full-text, fused by RRF), ``"filters"``
  (``{"modality": "image" | [...], "uri_prefix": "s3://bucket/photos/", "page": 2}``) and
  ``"include_thumbnail"`` → ``{"hits": [{"chunk_id", "asset_id", "uri", "modality", "score",
  ...}], "took_ms": 12.3}``, hits best first.

When a token is configured (``MRAG_API_TOKEN`` in the environment of the process that builds the
application), every ``/v1/`` call needs ``Authorization: Bearer <token>``.

Errors are always ``{"error": "<what is wrong and how to fix it>"}``: 401 for a missing or wrong
token, 413 for a body over ``serve.max_body_bytes``, and 400 for every other problem with a
request (malformed JSON, not an object, unknown field, neither or both of query and image, ``k``
out of range or not an integer, an unknown mode or ``fts`` with an image, bad filters, invalid
base64, bytes that are not an image); 409 when the database has no full-text index yet. 422 is
never used.

No ``from __future__ import annotations`` here, unlike the rest of mrag: Serve pickles deployment
classes by value, and FastAPI must resolve route annotations (``request: Request``) from the
unpickled function's globals, which hold only names the code uses, not annotation strings. With
string annotations ``request`` silently becomes a required query parameter (422 on every call).
"""

import asyncio
import base64
import binascii
import hmac
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from mrag.config import MragConfig, load_config
from mrag.errors import ConfigError, DecodeError, MragError
from mrag.models import get_model_spec
from mrag.query import decode_query_image, validate_request
from mrag.retrieve.search import SearchFilters

if TYPE_CHECKING:
    from ray.serve.handle import DeploymentHandle

log = logging.getLogger(__name__)

#: The application name ``run_server`` and ``cluster/serve.yaml`` use.
APP_NAME = "mrag"
#: Environment variables read when the application is built (not when this module is imported).
TOKEN_ENV = "MRAG_API_TOKEN"
CONFIG_ENV = "MRAG_CONFIG"
DB_ENV = "MRAG_DB"
CLIP_WEIGHTS_ENV = "MRAG_CLIP_WEIGHTS"

_SEARCH_FIELDS = ("query", "image", "k", "mode", "filters", "include_thumbnail")
_DEFAULT_K = 10
_INGRESS_NUM_CPUS = 0.25  # parsing, base64, LanceDB calls: I/O bound; decoding runs in a thread


class ApiError(Exception):
    """A client error with its HTTP status; rendered as ``{"error": message}``."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass(frozen=True)
class SearchRequest:
    """A validated ``/v1/search`` body. ``image`` holds the decoded base64 bytes."""

    query: str | None
    image: bytes | None
    k: int
    mode: str
    filters: SearchFilters
    include_thumbnail: bool


def parse_search_request(body: bytes, max_k: int) -> SearchRequest:
    """Validates a raw JSON body; every problem is an :class:`ApiError` (400) naming the field.

    Pure (no Ray, no model), so the rules can be unit-tested and reused by other front ends.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_SEARCH_FIELDS))
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}; allowed: {', '.join(_SEARCH_FIELDS)}")
    query, image, k = data.get("query"), data.get("image"), data.get("k", min(_DEFAULT_K, max_k))
    if image is not None and not isinstance(image, str):
        raise ApiError(400, "image must be a base64 string of the image file's bytes")
    try:
        mode = data.get("mode", "hybrid")
        validate_request(query, image, k, max_k, mode)
    except MragError as exc:
        raise ApiError(400, str(exc)) from None
    raw_filters = data.get("filters")
    if raw_filters is not None and not isinstance(raw_filters, dict):
        raise ApiError(400, 'filters must be an object like {"modality": "image"}')
    try:
        filters = SearchFilters.from_dict(raw_filters)
    except MragError as exc:
        raise ApiError(400, str(exc)) from None
    include_thumbnail = data.get("include_thumbnail", False)
    if not isinstance(include_thumbnail, bool):
        raise ApiError(400, "include_thumbnail must be true or false")
    image_bytes = _decode_base64(image) if image is not None else None
    return SearchRequest(query, image_bytes, k, mode, filters, include_thumbnail)


def _decode_base64(text: str) -> bytes:
    """Standard base64, optionally as a ``data:`` URL and with line breaks (``base64 file``)."""
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    compact = "".join(text.split())
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "image is not valid base64 (standard alphabet, with padding)") from None
    if not data:
        raise ApiError(400, "image is empty")
    return data


async def read_limited_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing (413) one over ``max_bytes`` by header or by actual length.

    The ``Content-Length`` check refuses before reading; streaming with a running count catches
    chunked uploads and clients whose header understates the body, without buffering it all.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_bytes = int(declared)
        except ValueError:
            raise ApiError(400, "Content-Length header is not an integer") from None
        if declared_bytes > max_bytes:
            raise ApiError(
                413, f"request body is {declared_bytes} bytes; the limit is {max_bytes} bytes"
            )
    parts: list[bytes] = []
    received = 0
    async for part in request.stream():
        received += len(part)
        if received > max_bytes:
            raise ApiError(413, f"request body is over the limit of {max_bytes} bytes")
        parts.append(part)
    return b"".join(parts)


def _as_vector(values: list[float] | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float32)


def _check_vector_width(retriever: Any, embed_dim: int) -> None:
    """Fails the replica at start-up, not per request, when the DB was built by another model."""
    from mrag.store import schema

    table = retriever.store.open(schema.CHUNKS)
    if table is None:
        log.warning("%s has no chunks table yet; searches return no hits", retriever.store.db_uri)
        return
    have = table.schema.field("clip").type.list_size
    if have != embed_dim:
        raise ConfigError(
            f"{retriever.store.db_uri}: chunks.clip holds {have}-d vectors but the CLIP model "
            f"makes {embed_dim}-d ones; serve with the model the database was built with"
        )


# ------------------------------------------------------------------------------------------------
# Deployments (pickled by value when decorated: every global they use must be defined above)


@serve.deployment(name="QueryEncoder")
class QueryEncoder:
    """The CLIP model behind the API: one text or image per call, batched across callers.

    ``encode_text`` and ``encode_image`` validate their single input and then queue it on a
    ``@serve.batch`` method, so a bad input fails alone instead of failing its batch-mates.
    Batch size and wait come from ``config.serve`` (``encoder_max_batch_size``,
    ``encoder_batch_wait_s``) and can be changed live through ``user_config``
    (``{"max_batch_size": 32, "batch_wait_timeout_s": 0.01}``). Note ``serve.batch`` never forms
    batches larger than the deployment's ``max_ongoing_requests``.

    Device and torch threads follow the resources the replica was actually given (a YAML
    ``ray_actor_options`` override included): CUDA when it holds a GPU, and
    ``ceil(num_cpus)`` intra-op threads, because Ray would otherwise cap torch at the
    reservation's integer part.
    """

    def __init__(self, config: MragConfig) -> None:
        import ray
        import torch

        from mrag.embed.clip import ClipEmbedder, pick_device
        from mrag.embed.text import HFTextEmbedder

        assigned = ray.get_runtime_context().get_assigned_resources()
        num_cpus = assigned.get("CPU", config.serve.encoder_num_cpus)
        num_gpus = assigned.get("GPU", config.serve.encoder_num_gpus)
        torch.set_num_threads(max(1, math.ceil(num_cpus)))
        self.spec = get_model_spec(config.clip_model)
        self.embedder = ClipEmbedder(
            self.spec,
            weights=config.clip_weights,
            device=pick_device(num_gpus),
            dtype="auto",
            batch_size=config.serve.encoder_max_batch_size,
            seed=config.seed,
        )
        self.text_embedder = HFTextEmbedder(
            get_model_spec(config.text_model),
            weights=config.text_weights,
            device=pick_device(num_gpus),
            batch_size=config.serve.encoder_max_batch_size,
        )
        self._image_shape = (self.spec.image_size, self.spec.image_size, 3)
        self._stats = {"batches": 0, "largest_batch": 0, "texts": 0, "images": 0, "queries": 0}
        self._set_batching(config.serve.encoder_max_batch_size, config.serve.encoder_batch_wait_s)
        self.embedder.embed_texts(["warm-up"])  # first request should not pay lazy init
        self.text_embedder.embed_queries(["warm-up"])
        log.info(
            "QueryEncoder ready: %s on %s, %d torch threads",
            self.spec.name,
            self.embedder.device,
            torch.get_num_threads(),
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live batching changes from ``user_config`` (Serve calls this; no replica restart)."""
        allowed = {"max_batch_size", "batch_wait_timeout_s"}
        unknown = sorted(set(user_config or {}) - allowed)
        if unknown:
            raise ConfigError(
                f"QueryEncoder user_config: unknown key {unknown[0]!r}; allowed: "
                + ", ".join(sorted(allowed))
            )
        self._set_batching(
            user_config.get("max_batch_size", self._embed_text_batch._get_max_batch_size()),
            user_config.get(
                "batch_wait_timeout_s", self._embed_text_batch._get_batch_wait_timeout_s()
            ),
        )

    def _set_batching(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        # The setters live on the decorated function (one queue per method per process); each
        # replica is its own process, so this is per replica.
        for method in (self._embed_text_batch, self._embed_image_batch, self._embed_query_batch):
            method.set_max_batch_size(int(max_batch_size))
            method.set_batch_wait_timeout_s(float(batch_wait_timeout_s))

    async def encode_text(self, text: str) -> list[float]:
        """One query string → its unit-length CLIP vector."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        return (await self._embed_text_batch(text)).tolist()

    async def encode_query(self, text: str) -> list[float]:
        """One query string → its unit-length vector in the text model's space (``text_vec``)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        return (await self._embed_query_batch(text)).tolist()

    async def encode_image(self, pixels: np.ndarray) -> list[float]:
        """(1, S, S, 3) or (S, S, 3) uint8 RGB at the model's input size → its CLIP vector."""
        pixels = np.asarray(pixels)
        if pixels.ndim == 4 and pixels.shape[0] == 1:
            pixels = pixels[0]
        if pixels.shape != self._image_shape or pixels.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 pixels of shape {self._image_shape}, got {pixels.dtype} "
                f"{pixels.shape}; decode with mrag.query.decode_query_image"
            )
        return (await self._embed_image_batch(pixels)).tolist()

    def stats(self) -> dict[str, Any]:
        """Batching settings and counters for this replica (operators, tests)."""
        return {
            **self._stats,
            "max_batch_size": self._embed_text_batch._get_max_batch_size(),
            "batch_wait_timeout_s": self._embed_text_batch._get_batch_wait_timeout_s(),
            "device": str(self.embedder.device),
        }

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _embed_text_batch(self, texts: list[str]) -> list[np.ndarray]:
        self._count(len(texts), "texts")
        # A worker thread, so the replica keeps queueing the next batch while this one runs.
        return list(await asyncio.to_thread(self.embedder.embed_texts, texts))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _embed_query_batch(self, texts: list[str]) -> list[np.ndarray]:
        self._count(len(texts), "queries")
        return list(await asyncio.to_thread(self.text_embedder.embed_queries, texts))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _embed_image_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        self._count(len(images), "images")
        return list(await asyncio.to_thread(self.embedder.embed_images, np.stack(images)))

    def _count(self, size: int, kind: str) -> None:
        self._stats["batches"] += 1
        self._stats[kind] += size
        self._stats["largest_batch"] = max(self._stats["largest_batch"], size)


fastapi_app = FastAPI(
    title="mrag search API",
    summary="Multimodal search over a LanceDB corpus: text or image in, ranked chunks out.",
)


@fastapi_app.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    return JSONResponse({"error": exc.message}, status_code=exc.status_code, headers=headers)


@fastapi_app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Routing errors (404, 405) in the same ``{"error": ...}`` shape as ours."""
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)


@serve.deployment(name="SearchIngress")
@serve.ingress(fastapi_app)
class SearchIngress:
    """HTTP front door: auth, limits and validation, then encoder → retriever.

    Args:
        config: limits (``serve.max_k``, ``serve.max_body_bytes``), model and database.
        encoder: handle to the :class:`QueryEncoder` deployment.
        api_token: bearer token required on ``/v1/``; ``None`` or empty turns auth off. Passed
            as a constructor argument (read from ``MRAG_API_TOKEN`` when the app is built)
            because Serve replicas are Ray actors that do not see the builder's environment,
            and a YAML ``ray_actor_options`` replaces any ``runtime_env`` set in code.
    """

    def __init__(
        self, config: MragConfig, encoder: "DeploymentHandle", api_token: str | None = None
    ) -> None:
        from mrag.retrieve.search import Retriever
        from mrag.store.lance import Store

        self.config = config
        self.encoder = encoder
        self._token = (api_token or "").encode() or None
        self.retriever = Retriever(Store(config.db_uri))
        _check_vector_width(self.retriever, get_model_spec(config.clip_model).embed_dim)
        log.info(
            "SearchIngress ready over %s (auth %s)", config.db_uri, "on" if self._token else "off"
        )

    @fastapi_app.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        """Liveness for load balancers; no token needed, reveals no data."""
        return {
            "status": "ok",
            "clip_model": self.config.clip_model,
            "max_k": self.config.serve.max_k,
            "auth": self._token is not None,
        }

    @fastapi_app.post("/v1/search")
    async def search(self, request: Request) -> JSONResponse:
        """Text or image search; see the module docstring for the body and the errors."""
        started = time.perf_counter()
        self._authorize(request)
        body = await read_limited_body(request, self.config.serve.max_body_bytes)
        parsed = parse_search_request(body, self.config.serve.max_k)
        if parsed.image is not None:
            try:
                pixels = await asyncio.to_thread(decode_query_image, parsed.image, self.config)
            except DecodeError as exc:
                raise ApiError(400, f"image could not be decoded: {exc}") from None
            clip_vector = await self.encoder.encode_image.remote(pixels)
            text_vector = None
        elif parsed.mode == "fts":
            clip_vector = text_vector = None
        else:  # both spaces at once: the encoder batches each across concurrent callers
            clip_vector, text_vector = await asyncio.gather(
                self.encoder.encode_text.remote(parsed.query),
                self.encoder.encode_query.remote(parsed.query),
            )
        try:
            hits = await asyncio.to_thread(
                self.retriever.search,
                parsed.mode,
                k=parsed.k,
                text=parsed.query,
                clip_vector=_as_vector(clip_vector),
                text_vector=_as_vector(text_vector),
                filters=parsed.filters,
                include_thumbnail=parsed.include_thumbnail,
            )
        except MragError as exc:  # e.g. full-text search before any index exists
            raise ApiError(409, str(exc)) from None
        return JSONResponse(
            {
                "hits": [hit.to_dict(include_thumbnail=parsed.include_thumbnail) for hit in hits],
                "took_ms": round((time.perf_counter() - started) * 1000, 1),
            }
        )

    def _authorize(self, request: Request) -> None:
        if self._token is None:
            return
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise ApiError(401, "missing bearer token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(presented.strip().encode(), self._token):
            raise ApiError(401, "invalid bearer token")


# ------------------------------------------------------------------------------------------------
# Application builders and the local server


def build_app(config: MragConfig, *, api_token: str | None = None) -> serve.Application:
    """Binds the encoder and the ingress into one application. No Ray needed to build it.

    Args:
        config: the whole config; shipped to each replica, which builds its own model and store.
        api_token: bearer token for ``/v1/``; defaults to ``MRAG_API_TOKEN`` in this process.
    """
    serve_config = config.serve
    token = api_token if api_token is not None else os.environ.get(TOKEN_ENV) or None
    encoder = QueryEncoder.options(
        num_replicas=serve_config.encoder_replicas,
        max_ongoing_requests=serve_config.max_ongoing_requests,
        ray_actor_options={
            "num_cpus": serve_config.encoder_num_cpus,
            "num_gpus": serve_config.encoder_num_gpus,
        },
    ).bind(config)
    return SearchIngress.options(
        max_ongoing_requests=serve_config.max_ongoing_requests,
        ray_actor_options={"num_cpus": _INGRESS_NUM_CPUS},
    ).bind(config, encoder, token)


def app_builder(args: dict[str, str]) -> serve.Application:
    """``serve run mrag.serve.app:app_builder db=... profile=... clip_weights=... serve.max_k=50``.

    Keys: ``config`` (YAML path), ``profile``, ``db`` (``db_uri``), any top-level config field
    (``clip_weights``, ``seed``...) and any dotted ``section.field``; anything else is a
    :class:`~mrag.errors.ConfigError`. Also usable as ``args:`` of an application in a Serve
    config file.
    """
    import dataclasses

    args = dict(args or {})
    path = args.pop("config", None) or os.environ.get(CONFIG_ENV)
    profile = args.pop("profile", None)
    overrides: dict[str, Any] = {"db_uri": args.pop("db", None) or os.environ.get(DB_ENV)}
    fields = {f.name for f in dataclasses.fields(MragConfig)} - {"profile", "ingest", "serve"}
    for key, value in args.items():
        if "." not in key and key not in fields:
            raise ConfigError(
                f"app_builder: unknown argument {key!r}; allowed: config, profile, db, "
                f"{', '.join(sorted(fields))}, or section.field such as serve.max_k"
            )
        overrides[key] = value
    return build_app(load_config(path, profile=profile, overrides=overrides))


def __getattr__(name: str) -> Any:
    """``mrag.serve.app:app``, built on access from ``MRAG_CONFIG``, ``MRAG_DB``, ``MRAG_PROFILE``
    and ``MRAG_CLIP_WEIGHTS``.

    Lazy (PEP 562) so importing this module reads no config and touches no database.
    """
    if name == "app":
        overrides = {
            "db_uri": os.environ.get(DB_ENV),
            "clip_weights": os.environ.get(CLIP_WEIGHTS_ENV),
        }
        return build_app(load_config(os.environ.get(CONFIG_ENV), overrides=overrides))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_server(config: MragConfig, *, blocking: bool = True) -> str:
    """Starts (or joins) Ray, starts Serve on ``serve.host:serve.port`` and deploys the app.

    Returns the base URL. With ``blocking`` it waits until Ctrl-C and then shuts Serve down;
    without, Serve keeps running in the Ray instance (callers own ``serve.shutdown()``).
    """
    from mrag.ray_runtime import init_ray

    host, port = config.serve.host, config.serve.port
    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(TOKEN_ENV):
        log.warning(
            "serving on %s without %s: /v1/ is open to anyone who can reach it", host, TOKEN_ENV
        )
    init_ray(config.ray_address)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(config), name=APP_NAME, route_prefix="/")
    url = f"http://{host}:{port}"
    print(f"mrag search API ready: POST {url}/v1/search (health: {url}/healthz)", flush=True)
    if blocking:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            serve.shutdown()
    return url
