"""Late-interaction MaxSim over the packaged all-MiniLM-L6-v2: real weights, offline."""

from __future__ import annotations

import pytest

from mrag.errors import ConfigError
from mrag.models import get_model_spec
from mrag.rerank import RerankQuery, RerankSettings, create_reranker, reranker_from_settings
from mrag.rerank.late_interaction import LateInteractionReranker
from tests.rerank.hits import ids, image_hit, text_hit

QUERY = "what causes the seasons on earth"
SURFACE_MATCH = (
    "Earth Arena sells seasons passes: buy tickets for every home game of the season on Earth Day."
)
OFF_TOPIC = "A recipe for banana bread with walnuts and brown sugar."
ANSWER = (
    "Because the planet's axis is tilted, each hemisphere gets more direct sunlight for part of "
    "the year, which brings summer, and less for the rest, which brings winter."
)


@pytest.fixture(scope="module")
def maxsim() -> LateInteractionReranker:
    return create_reranker("maxsim")


def test_maxsim_repairs_a_first_stage_that_ranked_the_surface_match_first(maxsim):
    """BM25 loves the advert: it repeats 'Earth' and 'seasons'. The answer shares no word."""
    first_stage = [
        text_hit("advert", SURFACE_MATCH, 12.1),
        image_hit("globe.jpg", 11.0),
        text_hit("bread", OFF_TOPIC, 9.3),
        text_hit("answer", ANSWER, 4.2),
    ]

    out = maxsim.rerank(RerankQuery(text=QUERY), first_stage)

    assert ids(out) == ["answer", "globe.jpg", "advert", "bread"]
    assert out[0].score > out[2].score > out[3].score


def test_hits_without_text_keep_their_slots_and_empty_pools_pass(maxsim):
    pool = [text_hit("none", None), text_hit("bread", OFF_TOPIC), text_hit("answer", ANSWER)]
    out = maxsim.rerank(RerankQuery(text=QUERY), pool)
    assert ids(out) == ["none", "answer", "bread"]
    assert maxsim.rerank(RerankQuery(text=QUERY), []) == []
    assert maxsim.rerank(RerankQuery(text="  "), pool) == pool  # nothing to match
    assert maxsim.rerank(RerankQuery(text="?!"), pool) == pool  # punctuation matches nothing


def test_punctuation_only_passages_rank_last(maxsim):
    pool = [text_hit("dots", "... !!! ,,,"), text_hit("answer", ANSWER)]
    assert ids(maxsim.rerank(RerankQuery(text=QUERY), pool)) == ["answer", "dots"]


def test_settings_build_it_and_the_encoder_loads_once(maxsim):
    routed = reranker_from_settings(RerankSettings(text="maxsim", batch_size=2))
    assert routed.name == "maxsim:all-MiniLM-L6-v2-packaged"
    ((part, _),) = routed.parts
    assert part.model is maxsim.model


def test_a_cross_encoder_spec_is_not_a_token_encoder():
    with pytest.raises(ConfigError, match="needs a text encoder"):
        LateInteractionReranker(get_model_spec("tiny-cross-encoder-random"))


def test_a_mixed_pool_gets_maxsim_for_text_and_clip_for_images(maxsim):
    import numpy as np

    from mrag.rerank import RoutedReranker
    from mrag.rerank.clip import ClipReranker

    query_vector = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    vectors = {"far.jpg": np.array([0.1, 1.0, 0.0]), "near.jpg": np.array([1.0, 0.2, 0.0])}
    routed = RoutedReranker(text=maxsim, visual=ClipReranker(vectors))
    pool = [
        text_hit("advert", SURFACE_MATCH), image_hit("far.jpg"), text_hit("answer", ANSWER),
        image_hit("near.jpg"),
    ]  # fmt: skip

    out = routed.rerank(RerankQuery(text=QUERY, clip_vector=query_vector), pool)

    assert ids(out) == ["answer", "near.jpg", "advert", "far.jpg"]
