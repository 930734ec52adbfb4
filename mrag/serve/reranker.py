"""The reranker deployment: reorders a candidate pool for the ingress, with its own resources.

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
        log.info("Reranker ready (%s)", getattr(self.reranker, "name", "none"))

    async def rerank(self, query: RerankQuery, hits: list[Hit]) -> list[Hit]:
        if self.reranker is None or len(hits) < 2:
            return hits
        return await asyncio.to_thread(self.reranker.rerank, query, hits)
