"""Long-lived processes hold a bounded amount: the engine and model caches evict, and a replica's
counters do not grow with the requests it serves (``bench/serve_load.py --soak`` measures RSS).
"""

from __future__ import annotations

import asyncio

from mrag.config import load_config
from mrag.hits import Hit
from mrag.query import LruCache, QueryEngine, config_fingerprint
from mrag.rerank import RerankQuery
from mrag.serve.reranker import RerankerDeployment


def test_the_cache_keeps_the_most_recently_used_entries() -> None:
    cache: LruCache[int, str] = LruCache()
    built: list[int] = []

    def get(key: int) -> str:
        return cache.get_or_create(key, lambda: built.append(key) or f"value {key}", 3)

    for key in range(100):
        assert get(key) == f"value {key}"
    assert len(cache) == 3 and built == list(range(100))
    assert get(98) == "value 98" and built[-1] == 99  # a hit: nothing built
    get(100)  # evicts the least recently used: 97, not 98
    assert 97 not in cache and 98 in cache and 99 in cache and 100 in cache


def test_engines_past_the_configured_number_are_evicted(tmp_path) -> None:
    def config(name: str):
        overrides = {"db_uri": str(tmp_path / name), "serve.engine_cache_size": 2}
        return load_config(profile="offline", overrides=overrides)

    first = QueryEngine.for_config(config("a"))
    assert QueryEngine.for_config(config("a")) is first
    second = QueryEngine.for_config(config("b"))
    third = QueryEngine.for_config(config("c"))
    from mrag.query import _ENGINES, _MODELS

    assert len(_ENGINES) == 2 and len(_MODELS) <= 2
    assert config_fingerprint(config("a")) not in _ENGINES
    assert QueryEngine.for_config(config("c")) is third
    assert QueryEngine.for_config(config("b")) is second
    assert QueryEngine.for_config(config("a")) is not first  # built again: it was evicted
    assert first.search("a red car", k=1) == []  # a caller still holding it keeps working


class _Reverse:
    name = "reverse"

    def rerank(self, query: RerankQuery, hits: list[Hit]) -> list[Hit]:
        return hits[::-1]


def test_the_reranker_replica_holds_the_same_after_thousands_of_batches() -> None:
    """``stats()`` counts batches; nothing is kept per batch (it used to append to a list).

    The batch body is called as ``@serve.batch`` calls it (outside a replica the decorator's
    queue has no Serve context to run in)."""
    cls = RerankerDeployment.func_or_class
    replica = object.__new__(cls)
    replica.reranker = _Reverse()
    replica._batches = replica._largest_batch = 0
    run_batch = cls._rerank_batch.__wrapped__
    hits = [
        Hit(chunk_id=f"c{i}", asset_id="a", uri="/notes.txt", modality="text", score=1.0 - i)
        for i in range(3)
    ]

    async def batches(n: int) -> None:
        for i in range(n):
            calls = [(RerankQuery(text="herons"), hits)] * (1 + i % 8)
            out = await run_batch(replica, calls)
            assert [[h.chunk_id for h in pool] for pool in out] == [["c2", "c1", "c0"]] * len(calls)

    def sizes() -> dict[str, int]:
        return {k: len(v) for k, v in vars(replica).items() if hasattr(v, "__len__")}

    asyncio.run(batches(10))
    before = sizes()
    asyncio.run(batches(3000))
    assert replica.stats() == {"batches": 3010, "largest_batch": 8}
    assert sizes() == before
