"""The reranker deployment: reorders candidate pools for the ingress, batched, with its own
resources.

A model reranker (a cross-encoder) is the costliest step of a search: as its own deployment it
scales, and takes a GPU, independently of the ingress and the query encoders. It reads the
stored vectors it needs (``rerank.visual: clip``) from the database itself, so the ingress sends
only the query and the hits.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ray import serve

if TYPE_CHECKING:
    from mrag.config import MragConfig
    from mrag.rerank import RerankQuery
    from mrag.retrieve.search import Hit

log = logging.getLogger(__name__)


# Pickled by value by Serve: every global its methods use is a module or an importable function.
@serve.deployment(name="Reranker")
class RerankerDeployment:
    """``rerank(query, hits) -> hits`` over HTTP's candidate pools (``mrag.rerank``)."""

    def __init__(self, config: MragConfig) -> None:
        from mrag.query import build_reranker
        from mrag.ray_runtime import bind_serve_replica_to_node_address
        from mrag.retrieve.search import Retriever

        bind_serve_replica_to_node_address()  # before Serve starts the replica's gRPC server
        # No CLIP model here: the ingress passes the query's vectors along with the pool.
        self.reranker = build_reranker(config, None, Retriever.for_config(config))
        # Counters, not a list of batch sizes: a replica lives for weeks and batches never stop.
        self._batches = 0
        self._largest_batch = 0
        log.info("Reranker ready (%s)", getattr(self.reranker, "name", "none"))

    async def rerank(self, query: RerankQuery, hits: list[Hit]) -> list[Hit]:
        if self.reranker is None or len(hits) < 2:
            return hits
        return await self._rerank_batch((query, hits))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.0)
    async def _rerank_batch(self, calls: list[tuple[RerankQuery, list[Hit]]]) -> list[list[Hit]]:
        """Concurrent searches' pools in one model call (no wait: a batch is whatever queued
        while the previous one ran, so an idle replica adds no latency)."""
        from mrag.rerank import rerank_many

        self._batches += 1
        self._largest_batch = max(self._largest_batch, len(calls))
        queries = [query for query, _ in calls]
        pools = [hits for _, hits in calls]
        return await asyncio.to_thread(rerank_many, self.reranker, queries, pools)

    def stats(self) -> dict[str, int]:
        """Batches run and the largest (what the tests read)."""
        return {"batches": self._batches, "largest_batch": self._largest_batch}
