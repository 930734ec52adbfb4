"""CLIP reranking: exact cosine between the query's CLIP vector and each hit's stored ``clip``.

Two things the first stage loses, this gets back:

- **Quantisation.** An IVF_PQ index ranks by compressed vectors (``refine_factor`` re-scores only
  one list, and fusion reorders it again); the stored full-precision vectors give the exact order.
- **Fusion.** After RRF a visual hit's position says how many lists liked it, not how close it
  is; rescoring the visual slots by cosine to the query orders them by the image itself.

A text query is embedded with CLIP's text tower (or its ``clip_vector`` reused) and compared to
each visual hit's image vector. Only ``modalities`` (visual by default) are scored: text chunks'
``clip`` vectors come from the text tower, and CLIP's text-text cosines sit far above its
text-image ones (the modality gap), so scoring both in one list would put every text chunk above
every image. Text slots are left to a text reranker (:class:`~mrag.rerank.base.RoutedReranker`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from mrag.errors import MragError
from mrag.rerank.base import VISUAL_MODALITIES, RerankQuery, reorder_in_slots
from mrag.vectors import VectorSource, as_vector_fetcher, unit_rows

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mrag.embed.clip import ClipEmbedder
    from mrag.hits import Hit

log = logging.getLogger(__name__)


class ClipReranker:
    """Reorders the visual slots of a pool by exact cosine to the query's CLIP vector.

    Args:
        vectors: where the hits' stored vectors come from: the ``chunks`` LanceDB table, a
            mapping ``chunk_id -> vector`` or a callable (see :mod:`mrag.vectors`).
        embedder: the query path's CLIP model (not loaded again here), used only when a query
            comes without its ``clip_vector``.
        modalities: chunk modalities to score; others keep their slots.
        column: the vector column to fetch from a table.

    Hits whose vector is missing (null, zero, not in the table) keep their slots too.
    """

    name = "clip"

    def __init__(
        self,
        vectors: VectorSource,
        *,
        embedder: ClipEmbedder | None = None,
        modalities: Sequence[str] = VISUAL_MODALITIES,
        column: str = "clip",
    ) -> None:
        self.fetch = as_vector_fetcher(vectors, column)
        self.embedder = embedder
        self.modalities = tuple(modalities)

    def rerank(self, query: RerankQuery, hits: Sequence[Hit]) -> list[Hit]:
        candidates = [i for i, hit in enumerate(hits) if hit.modality in self.modalities]
        if not candidates:
            return list(hits)
        query_vector = self.query_vector(query)
        ids = [hits[i].chunk_id for i in candidates]
        stored = unit_rows(self.fetch(ids), ids)
        scores = {}
        for i in candidates:
            vector = stored.get(hits[i].chunk_id)
            if vector is None:
                continue
            if vector.shape != query_vector.shape:
                raise MragError(
                    f"chunk {hits[i].chunk_id}'s clip vector is {vector.shape[0]}-d and the "
                    f"query's {query_vector.shape[0]}-d: the table was embedded with another model"
                )
            scores[i] = float(vector @ query_vector)
        if len(scores) < len(candidates):
            log.info("clip rerank: %d of %d hits have no stored vector",
                     len(candidates) - len(scores), len(candidates))  # fmt: skip
        return reorder_in_slots(hits, scores)

    def query_vector(self, query: RerankQuery) -> np.ndarray:
        """The query's unit CLIP vector: given, else from pixels, image bytes or text."""
        if query.clip_vector is not None:
            vector = np.asarray(query.clip_vector, dtype=np.float32).reshape(-1)
        elif self.embedder is not None and (query.pixels is not None or query.image):
            pixels = query.pixels if query.pixels is not None else self._decode(query.image)
            vector = self.embedder.embed_images(pixels.reshape(-1, *pixels.shape[-3:]))[0]
        elif self.embedder is not None and query.has_text:
            vector = self.embedder.embed_texts([query.text])[0]
        else:
            raise MragError(
                "the clip reranker needs the query's clip_vector, or a CLIP embedder and a "
                "text or image query"
            )
        norm = float(np.linalg.norm(vector))
        if not norm > 0:
            raise MragError("the query's clip vector is zero or not finite")
        return vector / norm

    def _decode(self, data: bytes) -> np.ndarray:
        """Query image bytes → pixels with the ingest decoder and the spec's resize."""
        from mrag.config import IngestConfig
        from mrag.decode.image import decode_image

        spec = self.embedder.spec
        ingest = IngestConfig()
        return decode_image(
            data,
            image_size=spec.image_size,
            max_pixels=ingest.max_image_pixels,
            thumbnail_px=ingest.thumbnail_px,
            resize_mode=spec.resize_mode,
            interpolation=spec.interpolation,
        ).pixels[None]
