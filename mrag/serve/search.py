"""What ``/v1/search`` does once a request is valid, without HTTP: plan → encode → retrieve →
rerank → group, through the deployments' handles (or in-process stand-ins)."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Future
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
    from mrag.rerank import Reranker
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
            ``None``: ``local_reranker``, or no reranking.
        searcher: the :class:`~mrag.serve.retriever.RetrieverDeployment`'s handle; ``None``:
            ``retriever`` searches here.
        local_reranker: a :class:`~mrag.rerank.Reranker` run here, in a worker thread, when
            there is no reranker deployment (one that loads no model, such as ``clip``'s exact
            cosine over stored vectors: cheaper than the hop to a deployment).
    """

    def __init__(
        self,
        config: MragConfig,
        encoder: Any,
        retriever: Retriever,
        reranker: Any = None,
        searcher: Any = None,
        local_reranker: Reranker | None = None,
    ) -> None:
        self.config = config
        self.encoder = encoder
        self.retriever = retriever
        self.reranker = reranker
        self.searcher = searcher
        self.local_reranker = local_reranker

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
        encoding = None  # the text encoders' call, while this replica's lists already run
        if request.image is not None:
            try:
                pixels = await asyncio.to_thread(decode_query_image, request.image, self.config)
            except DecodeError as exc:
                raise ApiError(400, f"image could not be decoded: {exc}") from None
            if spaces:
                vectors = await self.encoder.encode_image.remote(pixels, spaces)
        elif spaces and self.searcher is None:
            # Searched here: BM25 (and any list whose vector is ready) runs during the hop to
            # the encoders, as in the in-process search; the others wait on their Future.
            encoding = asyncio.ensure_future(self.encoder.encode_text.remote(request.query, spaces))
        elif spaces:  # every text encoder the plan needs, in one batched call
            vectors = await self.encoder.encode_text.remote(request.query, spaces)
        query_vectors = {space: _as_vector(vector) for space, vector in vectors.items()}
        arguments = {
            "k": candidate_depth(request, self.config),
            "text": request.query,
            "vectors": query_vectors if encoding is None else _pending(encoding, spaces),
            "filters": request.filters,
            "include_thumbnail": request.include_thumbnail,
            "fusion": request.fusion,
            "weights": request.weights,
        }
        searched = False
        try:
            if self.searcher is not None:
                pool = await self.searcher.search.remote(request.mode, arguments)
            else:
                pool = await asyncio.to_thread(self.retriever.search, request.mode, **arguments)
            searched = True
        except MragError as exc:  # e.g. full-text search before any index exists
            raise ApiError(409, str(exc)) from None
        finally:
            if encoding is not None and not searched:
                encoding.cancel()  # the search failed: nobody needs the vectors
        if encoding is not None:  # done by now, unless no list needed a vector
            query_vectors = {space: _as_vector(v) for space, v in (await encoding).items()}
        reranks = self.reranker is not None or self.local_reranker is not None
        if reranks and wants_rerank(request, self.config) and len(pool) > 1:
            from mrag.rerank import RerankQuery

            query = RerankQuery.from_request(request, query_vectors)
            if self.reranker is not None:
                pool = await self.reranker.rerank.remote(query, pool)
            else:
                pool = await asyncio.to_thread(self.local_reranker.rerank, query, pool)
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


def _pending(encoding: asyncio.Future, spaces: tuple[str, ...]) -> dict[str, Future]:
    """One :class:`concurrent.futures.Future` per space, set when ``encoding`` (the encoder
    deployment's ``{space: vector}``) is done, or failed with its error: what
    :meth:`Retriever.search` takes for a vector still being computed (its list threads wait on
    it, outside this event loop)."""
    futures = {space: Future() for space in spaces}

    def deliver(done: asyncio.Future) -> None:
        error = asyncio.CancelledError() if done.cancelled() else done.exception()
        for space, future in futures.items():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(_as_vector(done.result().get(space)))

    encoding.add_done_callback(deliver)
    return futures
