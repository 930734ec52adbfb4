"""In-process query path (CLI, notebooks): query → plan → vectors → ranked lists → fusion → hits.

The retriever returns a candidate pool (``retrieval.rerank_depth`` deep when the request asks
for reranking or grouping, else ``k``); :func:`finish_hits` reranks it (the hook a reranker plugs
into: identity while none is configured), groups it and keeps the top ``k``.

:class:`SearchRequest` is what a search takes, here and as the body of the HTTP API's
``POST /v1/search`` (:mod:`mrag.serve.api` publishes it), so the CLI, notebooks and the API
reject the same inputs with the same words. The Serve application runs the same steps split
across deployments.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    StringConstraints,
    ValidationError,
    create_model,
    model_validator,
)

from mrag.config import FusionMethod  # noqa: TC001 - pydantic reads it at runtime
from mrag.errors import MragError
from mrag.models import get_model_spec
from mrag.retrieve.search import (
    MODES,
    Retriever,
    SearchFilters,
    SearchMode,
    error_message,
    explain,
    invalid,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import numpy as np

    from mrag.config import MragConfig
    from mrag.embed import SpaceEmbedder
    from mrag.embed.clip import ClipEmbedder
    from mrag.embed.text import HFTextEmbedder
    from mrag.rerank import Reranker
    from mrag.retrieve.search import Hit


#: ``k`` when a request gives none (or ``serve.max_k`` if that is smaller).
DEFAULT_K = 10

K = TypeVar("K")
V = TypeVar("V")


def _image_bytes(value: Any) -> bytes:
    """Standard base64 text (also as a ``data:`` URL, with line breaks) → the file's bytes.

    ``bytes`` pass through unchanged: that is :class:`QueryEngine` handing over a file it read;
    JSON can only ever deliver text.
    """
    if isinstance(value, bytes):
        data = value
    elif isinstance(value, str):
        text = value.partition(",")[2] if value.startswith("data:") else value
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError):
            raise invalid("image is not valid base64 (standard alphabet, with padding)") from None
    else:
        raise invalid("image must be a base64 string of the image file's bytes")
    if not data:
        raise invalid("image is empty")
    return data


Query = Annotated[
    str,
    StringConstraints(strict=True, strip_whitespace=True, min_length=1),
    explain("query must be a non-empty string"),
]
ImageBytes = Annotated[bytes, PlainValidator(_image_bytes, json_schema_input_type=str)]
ListWeight = Annotated[float, Strict(), Field(ge=0, le=100)]
Group = Literal["asset"]


class SearchRequest(BaseModel):
    """A text or an image query, how many hits to return and how to search."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query: Query | None = Field(
        None, description="Text to search for. Give this or `image`.", examples=["a red car"]
    )
    image: ImageBytes | None = Field(
        None,
        description=(
            "The image file (JPEG, PNG, WebP...) as standard base64, line breaks and a `data:` "
            "URL prefix allowed. Give this or `query`."
        ),
        json_schema_extra={"contentEncoding": "base64"},
    )
    # k's upper bound is the server's serve.max_k: see search_request_model.
    k: Annotated[int, Strict(), Field(ge=1), explain("k must be an integer >= 1")] = Field(
        DEFAULT_K, description="How many hits to return, best first."
    )
    mode: Annotated[SearchMode, explain(f"mode must be one of {', '.join(MODES)}")] = Field(
        "hybrid",
        description=(
            "`vector`: nearest neighbours in every embedding space that serves the query, each "
            "over its own chunk modalities; `fts`: full-text (BM25, text queries only); "
            "`hybrid`: both, fused by weight (see `fusion`)."
        ),
    )
    filters: SearchFilters = Field(
        default_factory=SearchFilters, description="Restrict the search; all optional."
    )
    include_thumbnail: Annotated[
        bool, Strict(), explain("include_thumbnail must be true or false")
    ] = Field(False, description="Add each hit's JPEG thumbnail as `thumbnail_jpeg_b64`.")
    rerank: Annotated[bool | None, Strict(), explain("rerank must be true, false or null")] = Field(
        None,
        description=(
            "Rerank a deeper candidate pool (`retrieval.rerank_depth`) before the top `k` "
            "are kept; null: the server's `rerank.enabled`."
        ),
    )
    group: Annotated[Group | None, explain("group must be 'asset' or null")] = Field(
        None, description="`asset`: at most one hit (the best chunk) per asset."
    )
    fusion: Annotated[FusionMethod | None, explain("fusion must be one of rrf, score")] = Field(
        None,
        description=(
            "How several ranked lists are fused: `rrf` (reciprocal rank) or `score` "
            "(per-list calibrated scores); default: the server's `retrieval.fusion`."
        ),
    )
    weights: Annotated[
        dict[str, ListWeight] | None,
        explain("weights must map list names to numbers from 0 to 100"),
    ] = Field(
        None,
        description=(
            "Fusion weight per ranked list by name (`text_vec`, `clip_text`, `bm25`, "
            "`clip_image`), 0 to turn one off; default: the server's `retrieval` weights."
        ),
        examples=[{"bm25": 2.0}],
    )

    @model_validator(mode="before")
    @classmethod
    def _an_object_of_known_fields(cls, data: Any) -> Any:
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise invalid(f"request body must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.model_fields), key=str)
        if unknown:
            raise invalid(f"unknown field {unknown[0]!r}; allowed: {', '.join(cls.model_fields)}")
        return data

    @model_validator(mode="after")
    def _one_query_that_fits_the_mode(self) -> SearchRequest:
        if (self.query is None) == (self.image is None):
            raise invalid("give exactly one of a text query or an image")
        if self.image is not None and self.mode == "fts":
            raise invalid("mode 'fts' needs a text query; image queries use 'vector' or 'hybrid'")
        return self


@functools.cache
def search_request_model(max_k: int) -> type[SearchRequest]:
    """:class:`SearchRequest` with ``k`` bounded by a server's ``serve.max_k``.

    A subclass per limit rather than a check after validation, so the published schema states
    the real bound (``maximum``) and the error for ``k`` says it.
    """
    return bounded_request_model(SearchRequest, max_k, DEFAULT_K, "How many hits to return")


def bounded_request_model(
    base: type[SearchRequest], max_k: int, default_k: int, k_means: str
) -> type[SearchRequest]:
    """``base`` with ``k`` from 1 to ``max_k``, defaulting to ``default_k`` (or ``max_k``)."""
    k_type = Annotated[
        int, Strict(), Field(ge=1, le=max_k), explain(f"k must be an integer from 1 to {max_k}")
    ]
    default = Field(min(default_k, max_k), description=f"{k_means}, best first (1 to {max_k}).")
    return create_model(
        base.__name__,
        __base__=base,
        __module__=base.__module__,
        __doc__=base.__doc__,
        k=(k_type, default),
    )


def validate_request(data: dict[str, Any], max_k: int) -> SearchRequest:
    """A search as the HTTP API takes it (``image`` as bytes or base64); :class:`MragError`
    names the field that is wrong."""
    try:
        return search_request_model(max_k).model_validate(data)
    except ValidationError as exc:
        raise MragError(error_message(exc)) from None


def decode_query_image(data: bytes, config: MragConfig) -> np.ndarray:
    """Image bytes → (1, S, S, 3) pixels via the ingest decoder (same limits, same crop)."""
    from mrag.decode.image import decode_image

    spec = get_model_spec(config.clip_model)
    decoded = decode_image(
        data,
        image_size=spec.image_size,
        max_pixels=config.ingest.max_image_pixels,
        thumbnail_px=config.ingest.thumbnail_px,
        resize_mode=spec.resize_mode,  # the same resize as the ingested images had
        interpolation=spec.interpolation,
    )
    return decoded.pixels[None]


def config_fingerprint(config: MragConfig) -> str:
    """A digest of every setting in ``config``: equal digests mean the same behaviour."""
    settings = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(settings.encode()).hexdigest()


def wants_rerank(request: SearchRequest, config: MragConfig) -> bool:
    """The request's own ``rerank``, else the server's ``rerank.enabled``."""
    return config.rerank.enabled if request.rerank is None else request.rerank


def candidate_depth(request: SearchRequest, config: MragConfig) -> int:
    """How many fused hits to retrieve before reranking, grouping and truncating to ``k``."""
    if wants_rerank(request, config) or request.group:
        return max(request.k, config.retrieval.rerank_depth)
    return request.k


def build_reranker(
    config: MragConfig, clip: ClipEmbedder | None, retriever: Retriever
) -> Reranker | None:
    """The configured reranker (``rerank.text`` for text hits, ``rerank.visual`` for images and
    pages), or ``None`` when both are ``none``. Stored vectors come from the retriever's current
    table version."""
    from mrag.generate.factory import settings_from_config
    from mrag.rerank import RerankSettings, reranker_from_settings
    from mrag.vectors import lance_column_fetcher, lance_vector_fetcher

    settings = RerankSettings(
        text=config.rerank.text or "none",
        visual=config.rerank.visual,
        depth=config.retrieval.rerank_depth,
        batch_size=config.rerank.batch_size,
        max_length=config.rerank.max_length,
        weights=config.rerank.text_weights,
    )
    if not settings.enabled:
        return None

    def stored_vectors(chunk_ids: Sequence[str]) -> dict[str, np.ndarray]:
        table = retriever.table()
        return {} if table is None else lance_vector_fetcher(table, "clip")(chunk_ids)

    def thumbnails(chunk_ids: Sequence[str]) -> dict[str, bytes]:
        table = retriever.table()
        return {} if table is None else lance_column_fetcher(table, "thumbnail")(chunk_ids)

    return reranker_from_settings(
        settings,
        clip_embedder=clip,
        vectors=stored_vectors,
        endpoint=settings_from_config(config),  # an `openai` reranker: the answers' endpoint
        thumbnails=thumbnails,
    )


def rerank_hits(
    request: SearchRequest,
    hits: list[Hit],
    reranker: Reranker | None,
    vectors: dict[str, np.ndarray] | None = None,
    *,
    enabled: bool = True,
) -> list[Hit]:
    """The reranker's order of the pool when one is configured and the search reranks, else the
    fused order unchanged. ``vectors``: the query's own vectors, so none is computed twice."""
    if reranker is None or not enabled or len(hits) < 2:
        return hits
    from mrag.rerank import RerankQuery

    return reranker.rerank(RerankQuery.from_request(request, vectors), hits)


def group_hits(hits: list[Hit], group: str | None) -> list[Hit]:
    """``asset``: the first (best) hit of each asset, in rank order; ``None``: unchanged."""
    if group is None:
        return hits
    seen: set[str] = set()
    kept = []
    for hit in hits:
        if hit.asset_id not in seen:
            seen.add(hit.asset_id)
            kept.append(hit)
    return kept


def finish_hits(
    request: SearchRequest,
    pool: list[Hit],
    reranker: Reranker | None = None,
    vectors: dict[str, np.ndarray] | None = None,
    *,
    rerank: bool = True,
) -> list[Hit]:
    """Candidate pool → reranker (when ``rerank``) → grouping → the top ``k``."""
    reranked = rerank_hits(request, pool, reranker, vectors, enabled=rerank)
    return group_hits(reranked, request.group)[: request.k]


class QueryEngine:
    """CLIP and text encoders plus a retriever for one database. Reuse it: models load once.

    The reranker (``rerank``) is built on the first search that reranks: a profile's
    cross-encoder is loaded only by those who use it.
    """

    def __init__(self, config: MragConfig) -> None:
        self.config = config
        #: The query encoder of every space the config turns on (``mrag.spaces``).
        self.encoders = _query_models(config)
        self.retriever = Retriever.for_config(config)
        self._reranker: Reranker | None = None
        self._reranker_built = False
        self._encoder_thread: ThreadPoolExecutor | None = None

    @property
    def clip(self) -> ClipEmbedder:
        """The CLIP model (the visual reranker and notebooks use it directly)."""
        return self.encoders["clip"].embedder

    @property
    def text(self) -> HFTextEmbedder:
        """The text encoder (the extractive generator and condenser use it directly)."""
        return self.encoders["text_vec"].embedder

    @property
    def reranker(self) -> Reranker | None:
        if not self._reranker_built:
            self._reranker = build_reranker(self.config, self.clip, self.retriever)
            self._reranker_built = True
        return self._reranker

    @classmethod
    def for_config(cls, config: MragConfig) -> QueryEngine:
        """A cached engine per configuration, so notebooks pay the model load once.

        The key is the whole config, so no setting (``serve.max_k``, decoding limits...) of a
        later config is silently ignored; engines whose configs differ only in such settings
        share the loaded models. At most ``serve.engine_cache_size`` engines (and as many sets
        of query models) are kept, the least recently used evicted first, so a long-lived
        process that walks through many configs holds a bounded number of models.
        """
        return _ENGINES.get_or_create(
            config_fingerprint(config), lambda: cls(config), config.serve.engine_cache_size
        )

    def search(
        self,
        query: str | None,
        *,
        image: bytes | None = None,
        k: int = 10,
        filters: dict[str, Any] | SearchFilters | None = None,
        mode: str = "hybrid",
        include_thumbnail: bool = False,
        rerank: bool | None = None,
        group: str | None = None,
        fusion: str | None = None,
        weights: dict[str, float] | None = None,
    ) -> list[Hit]:
        """Validates like ``POST /v1/search`` (``k`` at most ``serve.max_k``), then searches."""
        request = validate_request(
            {
                "query": query,
                "image": image,
                "k": k,
                "filters": filters,
                "mode": mode,
                "include_thumbnail": include_thumbnail,
                "rerank": rerank,
                "group": group,
                "fusion": fusion,
                "weights": weights,
            },
            self.config.serve.max_k,
        )
        return self.run(request)

    def encode(self, requests: Sequence[SearchRequest]) -> list[dict[str, np.ndarray]]:
        """Query vectors per request, only for the spaces its plan searches; texts and images
        are each embedded in one batch per model (what ``mrag eval`` does for all its queries).
        """
        needed = [self.retriever.plan(**_plan_args(r)).spaces for r in requests]
        vectors: list[dict[str, np.ndarray]] = [{} for _ in requests]
        images: dict[int, np.ndarray] = {}
        for space, encoder in self.encoders.items():
            texts = [
                i for i, r in enumerate(requests) if r.query is not None and space in needed[i]
            ]
            if texts:
                made = encoder.embed_queries([requests[i].query for i in texts])
                for i, vector in zip(texts, made, strict=True):
                    vectors[i][space] = vector
            pictures = [
                i for i, r in enumerate(requests) if r.image is not None and space in needed[i]
            ]
            if pictures:
                import numpy as np

                for i in pictures:
                    if i not in images:
                        images[i] = decode_query_image(requests[i].image, self.config)
                made = encoder.embed_query_images(np.concatenate([images[i] for i in pictures]))
                for i, vector in zip(pictures, made, strict=True):
                    vectors[i][space] = vector
        return vectors

    def run(
        self, request: SearchRequest, vectors: dict[str, np.ndarray] | None = None
    ) -> list[Hit]:
        """Searches for an already validated request (``vectors`` from :meth:`encode`, or
        computed here: a text query's text-encoder vector is computed while the lists that do
        not need it, BM25 and CLIP's, already run)."""
        if vectors is None:
            vectors = self._encode_overlapped(request)
        pool = self.retriever.search(
            request.mode,
            k=candidate_depth(request, self.config),
            text=request.query,
            vectors=vectors,
            filters=request.filters,
            include_thumbnail=request.include_thumbnail,
            fusion=request.fusion,
            weights=request.weights,
        )
        vectors = {k: v.result() if isinstance(v, Future) else v for k, v in vectors.items()}
        rerank = wants_rerank(request, self.config)
        reranker = self.reranker if rerank else None
        return finish_hits(request, pool, reranker, vectors, rerank=rerank)

    def _encode_overlapped(self, request: SearchRequest) -> dict[str, Any]:
        """Query vectors; the text encoder's as a Future (it is the slow one: ~6 ms of MiniLM
        on 2 cores against ~0.5 ms of the CLIP text tower), so the lists that do not need it
        start meanwhile."""
        if request.query is None:
            return self.encode([request])[0]
        spaces = self.retriever.plan(**_plan_args(request)).spaces
        vectors: dict[str, Any] = {}
        query = request.query
        for space, encoder in self.encoders.items():
            if space not in spaces:
                continue
            if space == _OVERLAPPED_SPACE:
                if self._encoder_thread is None:
                    self._encoder_thread = ThreadPoolExecutor(1, thread_name_prefix="mrag-encode")
                vectors[space] = self._encoder_thread.submit(
                    lambda encoder=encoder: encoder.embed_queries([query])[0]
                )
            else:
                vectors[space] = encoder.embed_queries([query])[0]
        return vectors


#: The space whose query vector is computed beside the search (the slowest query encoder).
_OVERLAPPED_SPACE = "text_vec"


def _plan_args(request: SearchRequest) -> dict[str, Any]:
    return {
        "query_kind": "text" if request.query is not None else "image",
        "mode": request.mode,
        "filters": request.filters,
        "fusion": request.fusion,
        "weights": request.weights,
    }


def _query_models(config: MragConfig) -> dict[str, SpaceEmbedder]:
    """The query encoder of every space ``config`` turns on, loaded once per process."""
    from mrag.embed import EmbedOptions, create_space_embedder

    key = tuple(
        (c, config.space_model(c), config.space_weights(c)) for c in config.active_spaces()
    ) + (config.seed,)

    def load() -> dict[str, SpaceEmbedder]:
        return {
            column: create_space_embedder(
                column,
                get_model_spec(config.space_model(column)),
                EmbedOptions(weights=config.space_weights(column), seed=config.seed),
            )
            for column in config.active_spaces()
        }

    return _MODELS.get_or_create(key, load, config.serve.engine_cache_size)


class LruCache(Generic[K, V]):
    """A process-wide cache that keeps the ``max_entries`` most recently used values.

    What a value holds (models, open tables) is freed once nothing else refers to it: an
    engine evicted while a caller still holds it keeps working. Thread-safe; a value is built
    outside the lock, so two threads asking for one new key at once may both build it (the
    first stored wins) rather than one waiting on the other's model load.
    """

    def __init__(self) -> None:
        self._values: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_create(self, key: K, create: Callable[[], V], max_entries: int) -> V:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = create()
        with self._lock:
            value = self._values.setdefault(key, value)
            self._values.move_to_end(key)
            while len(self._values) > max_entries:
                self._values.popitem(last=False)
            return value

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values


_ENGINES: LruCache[str, QueryEngine] = LruCache()
_MODELS: LruCache[tuple, dict[str, SpaceEmbedder]] = LruCache()
