from __future__ import annotations

import pytest

from mrag.errors import MragError
from mrag.retrieve.search import Hit, SearchFilters, reciprocal_rank_fusion


def _hits(*ids: str) -> list[Hit]:
    return [Hit(chunk_id=i, asset_id=i, uri=f"/{i}", modality="text", score=0.0) for i in ids]


def test_rrf_promotes_items_ranked_well_in_several_lists() -> None:
    fused = reciprocal_rank_fusion([_hits("a", "b", "c"), _hits("c", "b", "d"), _hits("b")], k=3)
    assert [h.chunk_id for h in fused] == ["b", "c", "a"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 62 + 1 / 61, abs=1e-6)


def test_filters_become_quoted_sql() -> None:
    where = SearchFilters.from_dict(
        {"modality": ["text", "pdf_page"], "uri_prefix": "s3://b/it's/", "page": 3}
    ).to_where()
    assert where == (
        "modality IN ('text', 'pdf_page') AND starts_with(uri, 's3://b/it''s/') AND page = 3"
    )
    assert SearchFilters.from_dict(None).to_where() is None


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"modality": "hologram"}, "filters.modality"),
        ({"uri_prefix": 3}, "filters.uri_prefix"),
        ({"page": 0}, "filters.page"),
        ({"page": "2"}, "filters.page"),
        (["modality"], "must be an object"),
    ],
)
def test_bad_filters_are_rejected_with_the_key(filters, message) -> None:
    with pytest.raises(MragError, match=message):
        SearchFilters.from_dict(filters)


def test_lists_that_cannot_match_the_table_are_not_planned() -> None:
    """A text-only table: the CLIP and CLAP lists over images/sound would find nothing, so they
    are not planned and their query encoders never run."""
    from mrag.retrieve.plan import PlannedList
    from mrag.retrieve.search import _may_match, _TableState

    text_only = _TableState(table=None, version=1)
    text_only.space_modalities = {
        "bm25": frozenset({"text"}),
        "text_vec": frozenset({"text"}),
        "clip": frozenset({"text"}),
        "audio_vec": frozenset(),
    }
    over_images = PlannedList("clip_image", "clip", ("image", "pdf_page"), 1.0)
    over_text = PlannedList("clip_text", "clip", ("text",), 1.0)
    anything = PlannedList("audio_vec", "audio_vec", (), 1.0)
    unknown = PlannedList("new", "new_space", ("image",), 1.0)
    assert not _may_match(text_only, over_images)
    assert _may_match(text_only, over_text)
    assert not _may_match(text_only, anything)
    assert _may_match(text_only, unknown)  # a space the state knows nothing of: kept
