"""What ``/v1/search`` does once a request is valid, without HTTP: plan → encode → retrieve →
rerank → group, through the deployments' handles (or in-process stand-ins)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from mrag.errors import DecodeError, MragError
from mrag.query import candidate_depth, decode_query_image, finish_hits, wants_rerank
from mrag.refine import RefineSettings, group_by_asset, refine
from mrag.serve.api import (
    AssetEvidence,
    SearchHit,
    SearchRequest,
    SearchResponse,
    search_request_model,
)
from mrag.serve.gate import ApiError
from mrag.spaces import BM25

if TYPE_CHECKING:
    from mrag.config import MragConfig
    from mrag.hits import Hit
    from mrag.retrieve.search import Retriever

log = logging.getLogger(__name__)

#: ``group: "asset"``: the refiner without its evidence budget (a search shows every asset).
GROUP_REFINE = RefineSettings(max_tokens=10**9, max_images=10**6)


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
        spaces = tuple(sorted(plan.spaces - {BM25}))
        vectors: dict[str, list[float]] = {}
        if request.image is not None:
            try:
                pixels = await asyncio.to_thread(decode_query_image, request.image, self.config)
            except DecodeError as exc:
                raise ApiError(400, f"image could not be decoded: {exc}") from None
            if spaces:
                vectors = await self.encoder.encode_image.remote(pixels, spaces)
        elif spaces:  # every text encoder the plan needs, in one batched call
            vectors = await self.encoder.encode_text.remote(request.query, spaces)
        query_vectors = {space: _as_vector(vector) for space, vector in vectors.items()}
        arguments = {
            "k": candidate_depth(request, self.config),
            "text": request.query,
            "vectors": query_vectors,
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

            query = RerankQuery.from_request(request, query_vectors)
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
