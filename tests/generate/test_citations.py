from __future__ import annotations

from mrag.generate import parse_citations
from tests.generate.evidence import text_evidence


def _evidence():
    return [
        text_evidence(1, "alpha", page=3, page_end=4),
        text_evidence(2, "beta", modality="video_segment", start_s=12.0, end_s=15.5),
        text_evidence(3, "gamma", chunk_ids=("c-3a", "c-3b")),
    ]


def test_every_marker_form_maps_to_its_evidence():
    text = "A is so [1]. B too [2, 3]. C [3][1]. D [1; 2]. E [2-3]."
    citations, dropped = parse_citations(text, _evidence())
    assert [c.n for c in citations] == [1, 2, 3]  # order of first citation, no repeats
    assert dropped == 0
    first, second, third = citations
    assert (first.uri, first.page, first.page_end) == ("s3://corpus/doc-1.txt", 3, 4)
    assert (second.modality, second.start_s, second.end_s) == ("video_segment", 12.0, 15.5)
    assert third.chunk_ids == ("c-3a", "c-3b")
    assert first.to_dict() == {
        "n": 1,
        "chunk_ids": ["chunk-1"],
        "asset_id": "asset-1",
        "uri": "s3://corpus/doc-1.txt",
        "modality": "text",
        "page": 3,
        "page_end": 4,
        "char_start": 0,
        "char_end": 5,
    }


def test_numbers_without_evidence_are_dropped_and_counted():
    text = "Real [2]. Invented [7]. Mixed [1, 9]. Zero [0]. Repeat [7]. Range [3-5]."
    citations, dropped = parse_citations(text, _evidence())
    assert [c.n for c in citations] == [2, 1, 3]
    assert dropped == 6  # 7, 9, 0, 7 again, 4 and 5 of the range


def test_text_without_markers_and_bracketed_words_cites_nothing():
    citations, dropped = parse_citations("See [note] and [a, b] or []; no numbers.", _evidence())
    assert (citations, dropped) == ([], 0)
    assert parse_citations("anything [1]", []) == ([], 1)
