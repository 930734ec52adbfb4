"""In-process query path (CLI, notebooks): query → CLIP vector → vector search → hits.

The Serve application runs the same steps split across deployments; both validate requests with
:func:`validate_request` so the CLI and the HTTP API reject the same inputs with the same words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mrag.errors import MragError
from mrag.models import get_model_spec
from mrag.retrieve.search import MODES, Retriever, SearchFilters

if TYPE_CHECKING:
    import numpy as np

    from mrag.config import MragConfig
    from mrag.retrieve.search import Hit


def validate_request(query: Any, image: Any, k: Any, max_k: int, mode: Any = "hybrid") -> None:
    """Exactly one of text or image, a non-empty text, an integer ``k`` in ``[1, max_k]``, a mode
    that fits the query (full-text search needs text)."""
    if (query is None) == (image is None):
        raise MragError("give exactly one of a text query or an image")
    if query is not None and (not isinstance(query, str) or not query.strip()):
        raise MragError("query must be a non-empty string")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k:
        raise MragError(f"k must be an integer from 1 to {max_k}, got {k!r}")
    if mode not in MODES:
        raise MragError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if image is not None and mode == "fts":
        raise MragError("mode 'fts' needs a text query; image queries use 'vector' or 'hybrid'")


def decode_query_image(data: bytes, config: MragConfig) -> np.ndarray:
    """Image bytes → (1, S, S, 3) pixels via the ingest decoder (same limits, same crop)."""
    from mrag.decode.image import decode_image

    spec = get_model_spec(config.clip_model)
    decoded = decode_image(
        data,
        image_size=spec.image_size,
        max_pixels=config.ingest.max_image_pixels,
        thumbnail_px=config.ingest.thumbnail_px,
    )
    return decoded.pixels[None]


class QueryEngine:
    """CLIP and text encoders plus a retriever for one database. Reuse it: models load once."""

    def __init__(self, config: MragConfig) -> None:
        from mrag.embed.clip import ClipEmbedder
        from mrag.embed.text import HFTextEmbedder
        from mrag.store.lance import Store

        self.config = config
        self.clip = ClipEmbedder(
            get_model_spec(config.clip_model), weights=config.clip_weights, seed=config.seed
        )
        self.text = HFTextEmbedder(get_model_spec(config.text_model), weights=config.text_weights)
        self.retriever = Retriever(Store(config.db_uri))

    @classmethod
    def for_config(cls, config: MragConfig) -> QueryEngine:
        """A cached engine per (models, database), so notebooks pay the model load once."""
        key = (config.clip_model, config.clip_weights, config.text_model, config.text_weights,
               config.db_uri, config.seed)  # fmt: skip
        if key not in _ENGINES:
            _ENGINES[key] = cls(config)
        return _ENGINES[key]

    def search(
        self,
        query: str | None,
        *,
        image: bytes | None = None,
        k: int = 10,
        filters: dict[str, Any] | None = None,
        mode: str = "hybrid",
        include_thumbnail: bool = False,
    ) -> list[Hit]:
        validate_request(query, image, k, self.config.serve.max_k, mode)
        parsed = SearchFilters.from_dict(filters)
        if image is not None:
            clip_vector = self.clip.embed_images(decode_query_image(image, self.config))[0]
            text_vector = None
        else:
            clip_vector = None if mode == "fts" else self.clip.embed_texts([query])[0]
            text_vector = None if mode == "fts" else self.text.embed_queries([query])[0]
        return self.retriever.search(
            mode,
            k=k,
            text=query,
            clip_vector=clip_vector,
            text_vector=text_vector,
            filters=parsed,
            include_thumbnail=include_thumbnail,
        )


_ENGINES: dict[tuple, QueryEngine] = {}
