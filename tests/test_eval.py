from __future__ import annotations

import math

import pytest

from mrag.errors import MragError
from mrag.eval import doc_ids, load_qrels, load_queries, mrr_at, ndcg_at, recall_at
from mrag.retrieve.search import Hit


def test_metrics_on_a_hand_computed_ranking() -> None:
    ranked = ["d3", "d1", "d9", "d2"]
    relevant = {"d1": 1.0, "d2": 2.0}
    assert recall_at(ranked, relevant, 1) == 0.0
    assert recall_at(ranked, relevant, 2) == 0.5
    assert recall_at(ranked, relevant, 4) == 1.0
    assert mrr_at(ranked, relevant) == 0.5
    dcg = 1 / math.log2(3) + 2 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(ranked, relevant) == pytest.approx(dcg / idcg)
    assert ndcg_at(["d2", "d1"], relevant) == pytest.approx(1.0)


def test_hits_map_to_the_id_form_the_qrels_use_and_dedupe() -> None:
    def hit(chunk: str, asset: str, uri: str) -> Hit:
        return Hit(chunk_id=chunk, asset_id=asset, uri=uri, modality="text", score=1.0)

    hits = [hit("c1", "a1", "s3://b/x.txt"), hit("c2", "a1", "s3://b/x.txt"),
            hit("c3", "a2", "s3://b/y.pdf"), hit("c4", "a3", "s3://b/z.md")]  # fmt: skip
    assert doc_ids(hits, {"a1", "a2"}) == ["a1", "a2", "s3://b/z.md"]
    assert doc_ids(hits, {"x.txt", "y.pdf"}) == ["x.txt", "y.pdf", "s3://b/z.md"]
    assert doc_ids(hits, {"c2"})[:2] == ["s3://b/x.txt", "c2"]


def test_beir_files_parse_and_bad_lines_name_the_line(tmp_path) -> None:
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"_id": "q1", "text": "bread"}\n\n{"_id": 2, "text": "stocks"}\n')
    assert load_queries(queries) == {"q1": "bread", "2": "stocks"}
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\tdoc-a\t1\nq1\tdoc-b\t2\n2\tdoc-c\t1\n")
    assert load_qrels(qrels) == {"q1": {"doc-a": 1.0, "doc-b": 2.0}, "2": {"doc-c": 1.0}}
    queries.write_text('{"text": "no id"}\n')
    with pytest.raises(MragError, match="queries.jsonl:1"):
        load_queries(queries)
    qrels.write_text("q1\tdoc-a\tvery\n")
    with pytest.raises(MragError, match="qrels.tsv:1: score 'very'"):
        load_qrels(qrels)
