"""The retriever deployment: the ranked lists and their fusion over LanceDB, as its own replicas.

Searching is the database's work (ANN and BM25 over the tables, on local disk or object storage)
and scales with the corpus, not with the number of HTTP clients: as its own deployment it gets
its own replicas, CPUs and memory (its LanceDB caches) while the ingress stays a thin front
door. Each replica keeps one :class:`~mrag.retrieve.search.Retriever` (table handle, index
settings, refreshed when the table version changes).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ray import serve

if TYPE_CHECKING:
    from mrag.config import MragConfig
    from mrag.hits import Hit

log = logging.getLogger(__name__)


# Pickled by value by Serve: every global its methods use is a module or an importable function.
@serve.deployment(name="Retriever")
class RetrieverDeployment:
    """``search(mode, arguments) -> hits``: :meth:`Retriever.search` in a worker thread."""

    def __init__(self, config: MragConfig) -> None:
        from mrag.ray_runtime import bind_serve_replica_to_node_address
        from mrag.retrieve.search import Retriever

        bind_serve_replica_to_node_address()  # before Serve starts the replica's gRPC server
        self.retriever = Retriever.for_config(config)
        self.retriever.table()  # opens the table and reads its index settings before serving
        log.info("Retriever ready over %s", config.db_uri)

    async def search(self, mode: str, arguments: dict[str, Any]) -> list[Hit]:
        return await asyncio.to_thread(self.retriever.search, mode, **arguments)
