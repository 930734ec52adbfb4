"""Where a search's stages run: with the retriever and a model-free reranker folded into the
ingress (``serve.retriever_replicas: 0``, ``serve.reranker_replicas: 0``) a text search makes one
call to another deployment, the query encoder's, and still reranks; with them as deployments it
makes three. (Each call is a Ray hop: ~5 ms of CPU on a 2-core VM, bench/serve_load.py --hops.)
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Future
from typing import Any

from mrag.config import load_config
from mrag.hits import Hit
from mrag.serve.api import search_request_model
from mrag.serve.search import SearchService
from tests.serve.test_ingress import FakeEncoder, FakeRetriever


class _Counted:
    """A deployment handle's method that counts its calls (one Ray hop each)."""

    def __init__(self, hops: list[str], name: str, compute: Any) -> None:
        self.hops, self.name, self.compute = hops, name, compute

    async def remote(self, *args: Any) -> Any:
        self.hops.append(self.name)
        return self.compute(*args)


class _Reverse:
    """A reranker that reverses the pool (so its work shows in the order)."""

    def __init__(self) -> None:
        self.calls = 0

    def rerank(self, query: Any, hits: list[Hit]) -> list[Hit]:
        self.calls += 1
        return list(reversed(hits))


class _TwoHits(FakeRetriever):
    def search(self, mode: str, **kwargs: Any) -> list[Hit]:
        super().search(mode, **kwargs)
        return [
            Hit(chunk_id=f"c{i}", asset_id=f"a{i}", uri=f"/{i}.txt", modality="text", score=1 - i)
            for i in range(2)
        ]


def _search(service: SearchService) -> list[str]:
    request = search_request_model(10).model_validate({"query": "notes", "k": 2, "rerank": True})
    response = asyncio.run(service.search(request))
    return [hit.chunk_id for hit in response.hits]


def test_a_folded_search_makes_one_hop_and_still_reranks() -> None:
    config = load_config(profile="offline")
    hops: list[str] = []
    encoder = FakeEncoder()
    encoder.encode_text = _Counted(hops, "encoder", FakeEncoder.encode_text.compute)
    retriever = _TwoHits()
    reranker = _Reverse()
    service = SearchService(config, encoder, retriever, local_reranker=reranker)

    assert _search(service) == ["c1", "c0"]  # reversed by the reranker in this process
    assert hops == ["encoder"]
    assert reranker.calls == 1 and len(retriever.calls) == 1


def test_as_deployments_the_same_search_makes_three_hops() -> None:
    config = load_config(profile="offline")
    hops: list[str] = []
    encoder = FakeEncoder()
    encoder.encode_text = _Counted(hops, "encoder", FakeEncoder.encode_text.compute)
    retriever = _TwoHits()

    class _Searcher:
        search = _Counted(
            hops, "retriever", lambda mode, arguments: retriever.search(mode, **arguments)
        )

    class _Reranker:
        rerank = _Counted(hops, "reranker", _Reverse().rerank)

    service = SearchService(config, encoder, retriever, _Reranker(), _Searcher())
    assert _search(service) == ["c1", "c0"]
    assert hops == ["encoder", "retriever", "reranker"]


def test_a_folded_text_search_runs_its_lists_during_the_hop_to_the_encoders() -> None:
    """As the in-process search does: BM25 (which needs no vector) does not wait for the
    query encoders; the vector lists wait for their vector, not for the whole hop first."""
    config = load_config(profile="offline")
    order: list[str] = []

    class _HeldEncoder(FakeEncoder):
        def __init__(self) -> None:
            self.answer = asyncio.Event()

            class _EncodeText:
                @staticmethod
                async def remote(text: str, spaces: tuple[str, ...]) -> dict:
                    await self.answer.wait()
                    order.append("encoders answered")
                    return {s: [1.0, 0.0] for s in spaces}

            self.encode_text = _EncodeText()

    class _Lists(_TwoHits):
        def search(self, mode: str, **kwargs: Any) -> list[Hit]:
            order.append("bm25 list")
            pending = [v for v in kwargs["vectors"].values() if isinstance(v, Future)]
            assert pending, kwargs["vectors"]
            for vector in pending:
                vector.result(timeout=30)
            order.append("vector lists")
            return super().search(mode, **kwargs)

    encoder = _HeldEncoder()
    service = SearchService(config, encoder, _Lists(), local_reranker=_Reverse())
    request = search_request_model(10).model_validate({"query": "notes", "k": 2})

    async def scenario() -> list[str]:
        search = asyncio.create_task(service.search(request))
        for _ in range(3000):
            if order:
                break
            await asyncio.sleep(0.01)
        encoder.answer.set()
        response = await asyncio.wait_for(search, 30)
        return [hit.chunk_id for hit in response.hits]

    assert asyncio.run(scenario()) == ["c1", "c0"]  # and it still reranked, with the vectors
    assert order == ["bm25 list", "encoders answered", "vector lists"]
