from __future__ import annotations

import math

import pytest

from mrag.errors import MragError
from mrag.eval import doc_ids, evaluate, load_qrels, load_queries, mrr_at, ndcg_at, recall_at
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


class _RankedEngine:
    """Stands in for a QueryEngine: every query gets the same chunk ranking, cut at ``k``."""

    def __init__(self, hits: list[Hit]) -> None:
        from mrag.config import load_config

        self.config = load_config(profile="offline")
        self.reranker = None
        self.hits = hits
        self.asked_k: list[int] = []

    def encode(self, requests: list) -> list[dict]:
        return [{} for _ in requests]

    def run(self, request, vectors=None) -> list[Hit]:
        self.asked_k.append(request.k)
        return self.hits[: request.k]


def test_documents_rank_by_their_best_chunk_so_one_page_cannot_crowd_out_the_rest() -> None:
    # A long page matches with 12 chunks before the judged page's only chunk: cut at 10 chunks,
    # the judged page is not in the top 10 at all; ranked per document it is second.
    long_page = [
        Hit(chunk_id=f"long-{i}", asset_id="a-long", uri="/docs/long.html", modality="text",
            score=1.0 - i / 100)
        for i in range(12)
    ]  # fmt: skip
    judged = Hit(chunk_id="short-0", asset_id="a-short", uri="/docs/short.html",
                 modality="text", score=0.5)  # fmt: skip
    engine = _RankedEngine([*long_page, judged])
    queries, qrels = {"q1": "where is it"}, {"q1": {"short.html": 1.0}}

    per_document = evaluate(engine, queries, qrels, modes=("fts",))
    assert set(engine.asked_k) == {100}
    assert per_document.depth == 100
    fts = per_document.metrics["fts"]
    assert (fts["recall@1"], fts["recall@3"], fts["MRR@10"]) == (0.0, 1.0, 0.5)
    assert fts["nDCG@10"] == pytest.approx(1 / math.log2(3))
    assert "best of 100 chunks" in per_document.render()

    chunk_cut = evaluate(engine, queries, qrels, modes=("fts",), depth=10)
    assert chunk_cut.metrics["fts"]["recall@10"] == 0.0  # crowded out by the long page
    with pytest.raises(MragError, match="depth must be at least 10"):
        evaluate(engine, queries, qrels, modes=("fts",), depth=5)


def test_eval_cli_retrieves_100_chunks_unless_told() -> None:
    from mrag.cli import build_parser

    parser = build_parser()
    base = ["eval", "--queries", "q.jsonl", "--qrels", "r.tsv"]
    assert parser.parse_args(base).depth == 100
    assert parser.parse_args([*base, "--depth", "10"]).depth == 10
