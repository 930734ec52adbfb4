"""Cross-encoder reranking with a seeded random-init BERT (offline) and the hub specs' errors."""

from __future__ import annotations

import numpy as np
import pytest

from mrag.errors import ConfigError, WeightsNotFoundError
from mrag.models import get_model_spec
from mrag.rerank import RerankQuery, create_reranker
from mrag.rerank.cross_encoder import CrossEncoderReranker, load_cross_encoder
from tests.rerank.hits import ids, image_hit, text_hit

PASSAGES = {
    "a": "The axis of the Earth is tilted, so sunlight reaches each hemisphere unevenly.",
    "b": "Banana bread needs ripe bananas.",
    "c": "Seasons tickets for the arena go on sale on Monday morning at the box office.",
    "d": "Rain.",
    "e": "Winter and summer come from the tilt of the planet relative to its orbit around "
    "the sun, which changes the angle and the length of daylight over the year.",
}


@pytest.fixture(scope="module")
def reranker() -> CrossEncoderReranker:
    return create_reranker("tiny-cross-encoder-random", batch_size=2)


def _pool():
    hits = [
        text_hit(cid, text, score=1.0 - i / 10) for i, (cid, text) in enumerate(PASSAGES.items())
    ]
    return [hits[0], image_hit("img", 0.95), *hits[1:]]


def test_text_hits_are_ordered_by_the_model_and_images_keep_their_slot(reranker):
    pool = _pool()
    out = reranker.rerank(RerankQuery(text="what causes the seasons"), pool)

    scores = reranker.score("what causes the seasons", list(PASSAGES.values()))
    expected = [list(PASSAGES)[i] for i in np.argsort(-scores, kind="stable")]
    assert ids(out)[1] == "img"  # the image stays second
    assert [cid for cid in ids(out) if cid != "img"] == expected
    assert [h.score for h in out if h.chunk_id != "img"] == sorted(
        (h.score for h in out if h.chunk_id != "img"), reverse=True
    )
    assert sorted(ids(out)) == sorted(ids(pool))  # nothing dropped or added


def test_scores_do_not_depend_on_batching_or_length_sorting(reranker):
    passages = list(PASSAGES.values())
    wide = CrossEncoderReranker(get_model_spec("tiny-cross-encoder-random"), batch_size=64)
    np.testing.assert_allclose(reranker.score("q", passages), wide.score("q", passages), atol=1e-5)


def test_several_pools_rerank_in_shared_batches_as_they_would_alone():
    """What the Serve deployment's @serve.batch hands over: concurrent searches' pools."""
    from mrag.rerank import RoutedReranker, rerank_many

    reranker = CrossEncoderReranker(get_model_spec("tiny-cross-encoder-random"), batch_size=16)
    queries = [
        RerankQuery(text="what causes the seasons"),
        RerankQuery(image=b"not used by a text model"),
        RerankQuery(text="banana bread"),
    ]
    pools = [_pool(), _pool(), _pool()[2:]]
    calls: list[int] = []
    forward = reranker.model.forward
    reranker.model.forward = lambda *a, **kw: calls.append(1) or forward(*a, **kw)
    try:
        together = rerank_many(reranker, queries, pools)
    finally:
        del reranker.model.forward
    assert len(calls) == 1  # all 5 + 4 scorable pairs in one forward, not one per pool
    alone = [reranker.rerank(q, p) for q, p in zip(queries, pools, strict=True)]
    assert [ids(o) for o in together] == [ids(o) for o in alone]
    assert ids(together[1]) == ids(pools[1])  # the image query: unchanged
    routed = RoutedReranker(text=reranker)
    assert [ids(o) for o in rerank_many(routed, queries, pools)] == [ids(o) for o in alone]


def test_the_model_loads_once_per_process(reranker):
    again = create_reranker("tiny-cross-encoder-random")
    assert again.model is reranker.model
    assert load_cross_encoder.cache_info().currsize >= 1


def test_a_checkpoint_folder_loads_through_the_weights_override(reranker, tmp_path):
    """The production path (from_pretrained on a folder) gives the same scores."""
    reranker.model.save_pretrained(tmp_path)
    reranker.tokenizer.save_pretrained(tmp_path)
    from_disk = create_reranker("cross-encoder/ms-marco-MiniLM-L-6-v2", weights=str(tmp_path))

    passages = list(PASSAGES.values())
    np.testing.assert_allclose(
        from_disk.score("seasons", passages), reranker.score("seasons", passages), atol=1e-5
    )


@pytest.mark.parametrize(
    "name", ["cross-encoder/ms-marco-MiniLM-L-6-v2", "BAAI/bge-reranker-v2-m3"]
)
def test_hub_specs_without_weights_say_how_to_provide_them(name):
    with pytest.raises(WeightsNotFoundError, match=f"hub id '{name}'"):
        create_reranker(name)


def test_bad_input_is_returned_unchanged(reranker):
    no_text = [text_hit("a", None), text_hit("b", "   "), image_hit("c")]
    assert reranker.rerank(RerankQuery(text="q"), no_text) == no_text
    assert reranker.rerank(RerankQuery(text="q"), []) == []
    image_query = RerankQuery(clip_vector=np.ones(4, dtype=np.float32))
    assert reranker.rerank(image_query, _pool()) == _pool()


def test_a_text_encoder_spec_is_not_a_cross_encoder():
    with pytest.raises(ConfigError, match="not a cross-encoder"):
        CrossEncoderReranker(get_model_spec("all-MiniLM-L6-v2-packaged"))
