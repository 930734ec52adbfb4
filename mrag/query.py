"""In-process query path (CLI, notebooks): query → vectors → vector/full-text search → hits.

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
from typing import TYPE_CHECKING, Annotated, Any

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
    import numpy as np

    from mrag.config import MragConfig
    from mrag.embed.clip import ClipEmbedder
    from mrag.embed.text import HFTextEmbedder
    from mrag.retrieve.search import Hit


#: ``k`` when a request gives none (or ``serve.max_k`` if that is smaller).
DEFAULT_K = 10


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
            "`vector`: nearest neighbours in every embedding space the query has; `fts`: "
            "full-text (BM25, text queries only); `hybrid`: both, fused by reciprocal rank."
        ),
    )
    filters: SearchFilters = Field(
        default_factory=SearchFilters, description="Restrict the search; all optional."
    )
    include_thumbnail: Annotated[
        bool, Strict(), explain("include_thumbnail must be true or false")
    ] = Field(False, description="Add each hit's JPEG thumbnail as `thumbnail_jpeg_b64`.")

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
    k_type = Annotated[
        int, Strict(), Field(ge=1, le=max_k), explain(f"k must be an integer from 1 to {max_k}")
    ]
    default = Field(
        min(DEFAULT_K, max_k), description=f"How many hits to return, best first (1 to {max_k})."
    )
    return create_model(
        "SearchRequest",
        __base__=SearchRequest,
        __module__=__name__,
        __doc__=SearchRequest.__doc__,
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


class QueryEngine:
    """CLIP and text encoders plus a retriever for one database. Reuse it: models load once."""

    def __init__(self, config: MragConfig) -> None:
        from mrag.store.lance import Store

        self.config = config
        self.clip, self.text = _query_models(config)
        self.retriever = Retriever(Store(config.db_uri))

    @classmethod
    def for_config(cls, config: MragConfig) -> QueryEngine:
        """A cached engine per configuration, so notebooks pay the model load once.

        The key is the whole config, so no setting (``serve.max_k``, decoding limits...) of a
        later config is silently ignored; engines whose configs differ only in such settings
        share the loaded models.
        """
        key = config_fingerprint(config)
        if key not in _ENGINES:
            _ENGINES[key] = cls(config)
        return _ENGINES[key]

    def search(
        self,
        query: str | None,
        *,
        image: bytes | None = None,
        k: int = 10,
        filters: dict[str, Any] | SearchFilters | None = None,
        mode: str = "hybrid",
        include_thumbnail: bool = False,
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
            },
            self.config.serve.max_k,
        )
        return self.run(request)

    def run(self, request: SearchRequest) -> list[Hit]:
        """Searches for an already validated request."""
        if request.image is not None:
            clip_vector = self.clip.embed_images(decode_query_image(request.image, self.config))[0]
            text_vector = None
        elif request.mode == "fts":
            clip_vector = text_vector = None
        else:
            clip_vector = self.clip.embed_texts([request.query])[0]
            text_vector = self.text.embed_queries([request.query])[0]
        return self.retriever.search(
            request.mode,
            k=request.k,
            text=request.query,
            clip_vector=clip_vector,
            text_vector=text_vector,
            filters=request.filters,
            include_thumbnail=request.include_thumbnail,
        )


def _query_models(config: MragConfig) -> tuple[ClipEmbedder, HFTextEmbedder]:
    """The CLIP and text models ``config`` names, loaded once per process and shared."""
    from mrag.embed.clip import ClipEmbedder
    from mrag.embed.text import HFTextEmbedder

    key = (config.clip_model, config.clip_weights, config.text_model, config.text_weights,
           config.seed)  # fmt: skip
    if key not in _MODELS:
        clip = ClipEmbedder(
            get_model_spec(config.clip_model), weights=config.clip_weights, seed=config.seed
        )
        text = HFTextEmbedder(get_model_spec(config.text_model), weights=config.text_weights)
        _MODELS[key] = (clip, text)
    return _MODELS[key]


_ENGINES: dict[str, QueryEngine] = {}
_MODELS: dict[tuple, tuple[ClipEmbedder, HFTextEmbedder]] = {}
