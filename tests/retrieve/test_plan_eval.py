"""Retrieval plans and weighted fusion on a mixed corpus (text, PDF pages, pictures), no Ray.

The acceptance bar of the default mode: on this eval set hybrid is at least as good as the best
single mode on nDCG@10 and recall@10, with either fusion method.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from mrag.config import load_config
from mrag.eval import ImageQuery, evaluate, load_qrels, load_queries
from mrag.query import QueryEngine
from mrag.retrieve.fusion import RankedList, coordination, fuse, query_words
from mrag.retrieve.plan import build_plan
from mrag.retrieve.search import Hit
from tests.retrieve.corpus import PICTURES, TEXT_QUERIES, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    config = load_config(profile="offline", overrides={"db_uri": str(root / "db")})
    pictures = write_corpus(config, root)
    return root, config, pictures


def _hits(*ids: str, scores: tuple[float, ...] | None = None) -> list[Hit]:
    scores = scores or tuple(1.0 - i / 10 for i in range(len(ids)))
    return [
        Hit(chunk_id=i, asset_id=i, uri=f"/{i}", modality="text", score=s)
        for i, s in zip(ids, scores, strict=True)
    ]


@pytest.mark.parametrize("method", ["rrf", "score"])
def test_random_weight_lists_never_displace_pretrained_hits(method) -> None:
    pretrained = RankedList(_hits("a", "b"), weight=1.0)
    random = RankedList(_hits("x", "y", "b"), weight=10.0, random_init=True)
    fused = fuse([pretrained, random], k=10, method=method)
    assert [h.chunk_id for h in fused] == ["a", "b", "x", "y"]
    scores = [h.score for h in fused]
    assert scores == sorted(scores, reverse=True)
    alone = fuse([RankedList(_hits("x", "y"), random_init=True)], k=10, method=method)
    assert [h.chunk_id for h in alone] == ["x", "y"]  # with nothing else, random lists rank


def test_weights_change_the_fused_order() -> None:
    lists = [_hits("a", "b"), _hits("b", "a")]
    for weights, first in (((1.0, 3.0), "b"), ((3.0, 1.0), "a")):
        ranked = [RankedList(h, weight=w) for h, w in zip(lists, weights, strict=True)]
        for method in ("rrf", "score"):
            assert fuse(ranked, k=2, method=method)[0].chunk_id == first


def _chunks(scores: list[float], prefix: str, texts: dict[int, str] | None = None) -> list[Hit]:
    return [
        Hit(chunk_id=f"{prefix}{i}", asset_id=f"{prefix}{i}", uri=f"/{prefix}{i}",
            modality="text", score=s, text=(texts or {}).get(i, "unrelated words"))
        for i, s in enumerate(scores)
    ]  # fmt: skip


def test_score_fusion_ranks_alike_however_deep_the_lists_were_retrieved() -> None:
    # A search for 10 hits (lists 50 deep) and one for 100 (lists 200 deep) must agree on
    # their common top: each list is calibrated over its top 50 scores, not over its length.
    dense = [0.9 - 0.004 * i for i in range(200)]
    bm25 = [30.0 / (1 + i) ** 0.5 for i in range(200)]
    bm25_hits = [replace(h, chunk_id=f"d{i * 7 % 200}") for i, h in enumerate(_chunks(bm25, "b"))]
    deep = [RankedList(_chunks(dense, "d")), RankedList(bm25_hits, lexical=True)]
    shallow = [RankedList(r.hits[:50], lexical=r.lexical) for r in deep]
    top_deep = fuse(deep, k=100, method="score")[:10]
    top_shallow = fuse(shallow, k=10, method="score")
    assert [(h.chunk_id, h.score) for h in top_shallow] == [(h.chunk_id, h.score) for h in top_deep]


def test_bm25_counts_by_the_share_of_the_query_words_a_chunk_holds() -> None:
    words = query_words("battery powered vehicle")
    assert coordination(words, "The jaguar is a big cat with a powerful bite.") == 1 / 3
    assert coordination(query_words("the rings of Saturn"), "Saturn's rings: ice") == 1.0
    assert coordination(query_words("pg_namespace"), "SELECT * FROM pg_namespace") == 1.0
    assert coordination(query_words("of the"), "anything") == 1.0  # only stop words

    # The text encoder is sure (one hit far above the rest); BM25 matched one chunk on one
    # shared stem of three words: the encoder's hit stays first. Without the coordination
    # (no query given) that lone BM25 match would win.
    cat = "The jaguar is a big cat of the rainforest with a powerful bite."
    encoder = _chunks([0.45, 0.16, *[0.12 - 0.005 * i for i in range(20)]], "c", {1: cat})
    lone = RankedList([replace(encoder[1], score=2.9)], lexical=True)
    lists = [RankedList(encoder), lone]
    assert fuse(lists, k=3, method="score", query="battery powered vehicle")[0].chunk_id == "c0"
    assert fuse(lists, k=3, method="score")[0].chunk_id == "c1"

    # A keyword query over a large corpus: the encoder's list is flat (near-misses), BM25
    # found the one chunk that names the term: that chunk comes first.
    flat = _chunks([0.60 - 0.002 * i for i in range(50)], "k", {7: "pg_namespace: schemas"})
    lone = RankedList([replace(flat[7], score=9.5)], lexical=True)
    fused = fuse([RankedList(flat), lone], k=3, method="score", query="pg_namespace")
    assert fused[0].chunk_id == "k7"


def test_an_empty_list_fuses_to_nothing() -> None:
    hits = _chunks([0.5, 0.4], "e")
    for method in ("rrf", "score"):
        fused = fuse([RankedList([]), RankedList(hits), RankedList([], lexical=True)], k=5,
                     method=method, query="x")  # fmt: skip
        assert [h.chunk_id for h in fused] == ["e0", "e1"]


def test_plans_are_data_per_query_kind_and_filters_rule_lists_out() -> None:
    config = load_config(profile="offline")
    random_spaces = {"clip": True, "text_vec": False, "bm25": False}

    def names(**kwargs) -> list[str]:
        plan = build_plan(config.retrieval, random_spaces, **kwargs)
        return [item.name for item in plan.lists]

    assert names(query_kind="text", mode="hybrid") == ["text_vec", "clip_text", "bm25"]
    assert names(query_kind="text", mode="vector") == ["text_vec", "clip_text"]
    assert names(query_kind="text", mode="fts") == ["bm25"]
    assert names(query_kind="image", mode="hybrid") == ["clip_image"]
    assert names(query_kind="text", mode="hybrid", filter_modalities=("image",)) == ["clip_text"]
    assert names(query_kind="text", mode="hybrid", weights={"clip_text": 0}) == ["text_vec", "bm25"]
    plan = build_plan(config.retrieval, random_spaces, query_kind="text", mode="hybrid")
    clip_text = next(i for i in plan.lists if i.name == "clip_text")
    assert clip_text.random_init and clip_text.modalities == (
        "image",
        "pdf_page",
        "video_frame",
        "video_segment",
    )


def test_a_text_question_about_a_pdf_page_returns_that_page_first(corpus) -> None:
    root, config, _ = corpus
    engine = QueryEngine.for_config(config)
    for fusion in ("rrf", "score"):
        hits = engine.search("What are Saturn's rings made of?", k=5, fusion=fusion)
        assert (hits[0].uri, hits[0].page) == (f"{root}/guide.pdf", 2)


def test_an_image_query_finds_its_exact_image_first(corpus) -> None:
    root, config, pictures = corpus
    engine = QueryEngine.for_config(config)
    for name, data in pictures.items():
        hits = engine.search(None, image=data, k=3)
        assert hits[0].uri == f"{root}/{name}" and hits[0].score > 0.999


def test_filters_apply_to_every_list(corpus) -> None:
    root, config, _ = corpus
    engine = QueryEngine.for_config(config)
    for modality in ("text", "pdf_page", "image"):
        hits = engine.search("rings of Saturn", k=10, filters={"modality": modality})
        assert hits and {h.modality for h in hits} == {modality}
    paged = engine.search("rings of Saturn", k=10, filters={"page": 2})
    assert paged and {h.page for h in paged} == {2}


def _write_eval(folder, root) -> tuple[str, str]:
    rows = [{"_id": q, "text": text} for q, (text, _) in TEXT_QUERIES.items()]
    relevant = {q: doc for q, (_, doc) in TEXT_QUERIES.items()}
    for name in PICTURES:
        rows.append({"_id": f"img-{name}", "image": name})
        relevant[f"img-{name}"] = name
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "qrels.tsv").write_text("".join(f"{q}\t{d}\t1\n" for q, d in relevant.items()))
    return str(folder / "queries.jsonl"), str(folder / "qrels.tsv")


def test_hybrid_holds_up_against_every_single_mode(corpus) -> None:
    root, config, _ = corpus
    queries_file, qrels_file = _write_eval(root, root)
    queries = load_queries(queries_file)
    assert isinstance(queries[f"img-{next(iter(PICTURES))}"], ImageQuery)
    report = evaluate(QueryEngine.for_config(config), queries, load_qrels(qrels_file))
    print(report.render())  # the figures, for `pytest -s`
    metrics = report.metrics
    assert set(metrics) == {
        "vector", "vector/rrf", "fts", "hybrid", "hybrid/rrf", "hybrid+rerank", "hybrid+rerank/rrf"
    }  # fmt: skip
    for hybrid in ("hybrid",):  # the default fusion; hybrid/rrf is printed beside it
        for metric in ("nDCG@10", "recall@10"):
            best_single = max(metrics[m][metric] for m in ("vector", "vector/rrf", "fts"))
            assert metrics[hybrid][metric] >= best_single, (hybrid, metric, report.render())
            # the offline reranker (exact CLIP cosine for images and pages) never costs quality
            assert metrics["hybrid+rerank"][metric] >= metrics[hybrid][metric], report.render()
