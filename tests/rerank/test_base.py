"""The reranker interface: slot rule, routing, settings and the factory's errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mrag.errors import ConfigError
from mrag.rerank import (
    IdentityReranker,
    Reranker,
    RerankQuery,
    RerankSettings,
    RoutedReranker,
    create_reranker,
    reorder_in_slots,
    reranker_from_settings,
)
from tests.rerank.hits import ids, image_hit, text_hit


class _ByLength:
    """A reranker that prefers longer texts; it scores only hits with text."""

    name = "by-length"

    def rerank(self, query, hits):
        return reorder_in_slots(hits, {i: len(h.text) for i, h in enumerate(hits) if h.text})


class _Reverse:
    name = "reverse"

    def rerank(self, query, hits):
        return reorder_in_slots(hits, {i: float(i) for i in range(len(hits))})


def test_unscored_hits_keep_their_slots_and_scored_ones_take_the_new_scores():
    pool = [text_hit("a", "x"), image_hit("img"), text_hit("b", "xxx"), text_hit("c", "xx")]

    out = _ByLength().rerank(RerankQuery(text="q"), pool)

    assert ids(out) == ["b", "img", "c", "a"]
    assert [h.score for h in out] == [3.0, 0.0, 2.0, 1.0]
    assert ids(pool) == ["a", "img", "b", "c"]  # the caller's list is not changed


def test_ties_keep_the_first_stage_order():
    pool = [text_hit(c, "same") for c in "abcd"]
    assert ids(_ByLength().rerank(RerankQuery(text="q"), pool)) == ["a", "b", "c", "d"]


def test_routed_reranker_sends_each_modality_to_its_part_within_its_own_slots():
    pool = [
        image_hit("i1"), text_hit("t1", "x"), image_hit("i2"), text_hit("t2", "xxxx"),
        image_hit("i3"),
    ]  # fmt: skip
    routed = RoutedReranker(text=_ByLength(), visual=_Reverse())

    out = routed.rerank(RerankQuery(text="q"), pool)

    assert ids(out) == ["i3", "t2", "i2", "t1", "i1"]
    assert routed.name == "by-length+reverse"
    assert isinstance(routed, Reranker)


def test_empty_pool_and_identity():
    assert RoutedReranker(text=_ByLength()).rerank(RerankQuery(text="q"), []) == []
    pool = [text_hit("a", "x"), image_hit("b")]
    assert IdentityReranker().rerank(RerankQuery(), pool) == pool


def test_settings_pool_depth_and_validation():
    assert RerankSettings().pool_size(10) == 10  # nothing reranks: no deeper pool
    assert RerankSettings(text="maxsim").pool_size(10) == 50
    assert RerankSettings(visual="clip", depth=20).pool_size(30) == 30
    with pytest.raises(ConfigError, match="rerank.depth must be an integer >= 1"):
        RerankSettings(depth=0)
    with pytest.raises(ConfigError, match="rerank.visual must be one of none, clip, openai"):
        RerankSettings(visual="siglip")
    with pytest.raises(ConfigError, match="rerank.text cannot be clip"):
        RerankSettings(text="clip")


def test_factory_names_what_it_accepts():
    assert isinstance(create_reranker("none"), IdentityReranker)
    assert isinstance(reranker_from_settings(RerankSettings()), IdentityReranker)
    with pytest.raises(
        ConfigError, match="not one of none, clip, maxsim, openai or a registered model"
    ):
        create_reranker("colbert-v9")
    with pytest.raises(ConfigError, match="needs vectors"):
        create_reranker("clip")
    with pytest.raises(ConfigError, match="open_clip model and cannot rerank"):
        create_reranker("tiny-clip-random")


def test_importing_rerankers_and_refiner_loads_no_model_library():
    code = (
        "import sys, mrag.rerank, mrag.refine, mrag.rerank.cross_encoder, "
        "mrag.rerank.late_interaction, mrag.rerank.clip, mrag.rerank.llm, mrag.generate.condense; "
        "print(sorted(m for m in ('torch', 'transformers', 'open_clip', 'lancedb') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_query_from_a_search_request_and_its_vectors():
    from types import SimpleNamespace

    import numpy as np

    request = SimpleNamespace(query="red car", image=None, k=5)  # what SearchRequest has
    clip = np.ones(4, dtype=np.float32)

    query = RerankQuery.from_request(request, {"clip": clip})

    assert (query.text, query.image, query.text_vector) == ("red car", None, None)
    assert query.clip_vector is clip
    assert RerankQuery.from_request(request).clip_vector is None
