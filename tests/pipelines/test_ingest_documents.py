"""Documents and pictures end to end: mixed folder → ingest → FTS/vector/hybrid search with
locators → eval (text and image queries), where hybrid must hold up against every single mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrag.cli import main
from mrag.config import load_config
from mrag.pipelines.ingest import run_ingest
from mrag.query import QueryEngine
from mrag.store import schema
from mrag.store.lance import Store
from tests.doc_media import mixed_corpus
from tests.media import encode, pattern

pytestmark = pytest.mark.integration

#: Pictures ingested beside the documents (a mixed text / PDF / image corpus).
PICTURES = {f"docs/pictures/p{seed}.{fmt.lower()}": (fmt, seed)
            for seed, fmt in ((31, "PNG"), (32, "JPEG"), (33, "PNG"), (34, "JPEG"))}  # fmt: skip

PARAPHRASES = {
    "How can I make homemade sourdough loaves?": "docs/bread.txt",
    "What happens when molten rock reaches the surface?": "docs/volcano.md",
    "Which first moves are good at the start of a chess game?": "docs/chess.HTML",
    "What are Saturn's rings composed of?": "docs/astronomy.pdf",
}


@pytest.fixture(scope="module")
def doc_db(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    good, bad = mixed_corpus()
    pictures = {rel: encode(pattern(seed), fmt) for rel, (fmt, seed) in PICTURES.items()}
    for rel, data in {**good, **pictures, **{k: v for k, (v, _) in bad.items()}}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    config = load_config(profile="offline", overrides={"db_uri": str(root / "db")})
    summary = run_ingest(config, [str(root / "docs")])
    return root, config, summary


def test_every_good_document_is_indexed_and_every_bad_one_recorded(doc_db) -> None:
    root, config, summary = doc_db
    good, bad = mixed_corpus()
    assert summary.ingested == len(good) + len(PICTURES)
    assert summary.failed == {cls: 1 for _, cls in bad.values()}
    store = Store(config.db_uri)
    chunks = store.read(schema.CHUNKS).to_pylist()
    by_uri: dict[str, list[dict]] = {}
    for row in chunks:
        by_uri.setdefault(row["uri"], []).append(row)
    assert set(by_uri) == {str(root / rel) for rel in [*good, *PICTURES]}
    for uri, rows in by_uri.items():
        for row in rows:
            if row["modality"] == "text":
                assert row["text_vec"] is not None and row["clip"] is not None
                assert row["char_start"] < row["char_end"]
            elif "/pictures/" in uri:
                assert row["modality"] == "image" and row["clip"] is not None
            else:
                assert row["modality"] == "pdf_page" and row["clip"] is not None
    pdf = by_uri[str(root / "docs/astronomy.pdf")]
    assert sorted(r["page"] for r in pdf if r["modality"] == "pdf_page") == [1, 2, 3]
    scan_text = " ".join(r["text"] or "" for r in by_uri[str(root / "docs/scans/harvest.pdf")])
    assert "QUARTERLY HARVEST" in scan_text.upper()
    html_text = " ".join(r["text"] for r in by_uri[str(root / "docs/chess.HTML")])
    assert "tracking" not in html_text and "margin" not in html_text
    errors = {r["uri"]: r["error_class"] for r in store.read(schema.ERRORS).to_pylist()}
    assert errors == {str(root / rel): cls for rel, (_, cls) in bad.items()}
    kinds = {i.index_type for i in store.open(schema.CHUNKS).list_indices()}
    assert "FTS" in kinds


@pytest.mark.parametrize("question", sorted(PARAPHRASES))
@pytest.mark.parametrize("fusion", ["rrf", "score"])
def test_paraphrased_questions_find_their_document_first(doc_db, question, fusion) -> None:
    root, config, _ = doc_db
    hits = QueryEngine.for_config(config).search(question, k=10, mode="hybrid", fusion=fusion)
    assert hits[0].uri == str(root / PARAPHRASES[question])


def test_exact_rare_phrase_is_the_top_full_text_hit(doc_db) -> None:
    root, config, _ = doc_db
    hits = QueryEngine.for_config(config).search("zephyrine quokka", k=5, mode="fts")
    assert hits[0].uri == str(root / "docs/volcano.md")
    assert "zephyrine quokka" in hits[0].text
    assert hits[0].text == _source_slice(root, hits[0])


def _source_slice(root: Path, hit) -> str:
    from mrag.decode.text import decode_text

    decoded = decode_text(Path(hit.uri).read_bytes(), kind="markdown")
    return decoded.text[hit.char_start : hit.char_end]


def test_a_question_about_one_pdf_page_returns_that_page(doc_db) -> None:
    root, config, _ = doc_db
    engine = QueryEngine.for_config(config)
    for fusion in ("rrf", "score"):
        hits = engine.search("What are the rings of Saturn made of?", k=5, fusion=fusion)
        assert (hits[0].uri, hits[0].page) == (str(root / "docs/astronomy.pdf"), 2)
    only_page_3 = engine.search("ice", k=10, mode="fts", filters={"page": 3})
    assert only_page_3 and {h.page for h in only_page_3} == {3}


def test_an_image_query_finds_its_exact_image_first(doc_db) -> None:
    root, config, _ = doc_db
    engine = QueryEngine.for_config(config)
    for rel in PICTURES:
        for mode in ("vector", "hybrid"):
            hits = engine.search(None, image=(root / rel).read_bytes(), k=3, mode=mode)
            assert hits[0].uri == str(root / rel) and hits[0].score > 0.999


def test_filters_apply_to_every_list_and_group_keeps_one_hit_per_asset(doc_db) -> None:
    root, config, _ = doc_db
    engine = QueryEngine.for_config(config)
    question = "What are the rings of Saturn made of?"
    only_pages = engine.search(question, k=10, filters={"modality": "pdf_page"})
    assert only_pages and {h.modality for h in only_pages} == {"pdf_page"}
    nested = str(root / "docs/scans") + "/"
    assert {h.uri for h in engine.search(question, filters={"uri_prefix": nested})} == {
        str(root / "docs/scans/harvest.pdf")
    }
    grouped = engine.search(question, k=10, group="asset", rerank=True)
    assert len({h.asset_id for h in grouped}) == len(grouped) > 1
    assert grouped[0].uri == str(root / "docs/astronomy.pdf")
    no_bm25 = engine.search("zephyrine quokka", k=3, weights={"bm25": 0, "text_vec": 1})
    assert no_bm25  # still answered, by the vector lists alone


TEXT_QUERIES = {
    "q1": ("sourdough starter fermentation", "bread.txt"),
    "q2": ("How do bakers get an open crumb in their loaf?", "bread.txt"),
    "q3": ("ash clouds from an eruption", "volcano.md"),
    "q4": ("Why is soil near volcanoes good for farming?", "volcano.md"),
    "q5": ("Sicilian Defence", "chess.HTML"),
    "q6": ("how to keep the king safe early in the game", "chess.HTML"),
    "q7": ("mirror or lens to gather light", "astronomy.pdf"),
    "q8": ("Why does a comet's tail point away from the Sun?", "astronomy.pdf"),
    "q9": ("quarterly harvest report", "harvest.pdf"),
}


def _eval_files(folder: Path, root: Path, *, with_images: bool) -> list[str]:
    rows = [{"_id": q, "text": text} for q, (text, _) in TEXT_QUERIES.items()]
    relevant = {q: doc for q, (_, doc) in TEXT_QUERIES.items()}
    if with_images:
        for i, rel in enumerate(PICTURES):
            rows.append({"_id": f"img{i}", "image": str(root / rel)})
            relevant[f"img{i}"] = Path(rel).name
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in relevant.items())
    )
    return ["--queries", str(folder / "queries.jsonl"), "--qrels", str(folder / "qrels.tsv")]


def _assert_hybrid_holds_up(metrics: dict[str, dict[str, float]]) -> None:
    """The default mode (default fusion) never ranks below its best single part."""
    for hybrid in ("hybrid",):  # the default fusion; hybrid/rrf is printed beside it
        for metric in ("nDCG@10", "recall@10"):
            best_single = max(metrics[m][metric] for m in ("vector", "vector/rrf", "fts"))
            assert metrics[hybrid][metric] >= best_single, (hybrid, metric, metrics)


@pytest.mark.parametrize("with_images", [False, True], ids=["documents", "mixed-with-images"])
def test_eval_prints_modes_side_by_side_and_hybrid_holds_up(
    doc_db, tmp_path, capsys, with_images
) -> None:
    root, config, _ = doc_db
    files = _eval_files(tmp_path, root, with_images=with_images)
    argv = ["eval", "--db", config.db_uri, "--profile", "offline", *files]
    assert main(argv) == 0
    table = capsys.readouterr().out
    for mode in ("vector", "fts", "hybrid", "vector/rrf", "hybrid/rrf"):
        assert f"\n{mode} " in table
    assert "nDCG@10" in table
    assert main([*argv, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    print(table)  # the figures, for `pytest -s`
    _assert_hybrid_holds_up(metrics)
    assert metrics["hybrid"]["recall@10"] == 1.0


def test_ask_answers_with_citations_that_point_at_the_sources(doc_db, capsys) -> None:
    root, config, _ = doc_db
    argv = ["ask", "What are Saturn's rings composed of?", "--db", config.db_uri,
            "--profile", "offline"]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    cited = {c["n"] for c in result["citations"]}
    evidence = {e["n"]: e for e in result["evidence"]}
    assert cited and cited <= set(evidence)  # every citation points at evidence given
    assert result["dropped_citations"] == 0
    assert all(f"[{n}]" in result["answer"] for n in cited)
    assert any(evidence[n]["uri"].endswith("astronomy.pdf") for n in cited)
    assert main([*argv, "--stream"]) == 0
    printed = capsys.readouterr().out
    assert "Sources:" in printed and "astronomy.pdf" in printed.split("Sources:")[1]


def test_mrag_ask_in_process_cites_hits_it_returned(doc_db) -> None:
    import mrag

    _, config, _ = doc_db
    result = mrag.ask("What are Saturn's rings composed of?", config, k=4)
    assert result.generator == "extractive" and result.citations
    by_n = {item.n: item for item in result.evidence}
    for citation in result.citations:
        assert f"[{citation.n}]" in result.answer
        assert set(citation.chunk_ids) == set(by_n[citation.n].chunk_ids)
    assert any(by_n[c.n].uri.endswith("astronomy.pdf") for c in result.citations)
    with pytest.raises(mrag.MragError, match="exactly one"):
        mrag.ask(None, config)


def test_config_condenses_evidence_and_reranks_with_an_llm(doc_db) -> None:
    """``generate.condense`` and an LLM ``rerank.text`` reach the in-process answer path."""
    import mrag
    from mrag.query import QueryEngine
    from mrag.rerank.llm import LlmReranker

    _, base, _ = doc_db
    question = "What are Saturn's rings composed of?"
    whole = mrag.ask(question, base, k=4)
    condensed_config = base.model_copy(deep=True)
    condensed_config.generate.condense = "extractive"
    condensed = mrag.ask(question, condensed_config, k=4)
    assert [e.chunk_ids for e in condensed.evidence] == [e.chunk_ids for e in whole.evidence]
    assert any(e.condensed for e in condensed.evidence)
    for short, full in zip(condensed.evidence, whole.evidence, strict=True):
        assert len(short.text or "") <= len(full.text or "")

    llm_config = base.model_copy(deep=True)
    llm_config.rerank.text = "tiny-causal-lm-random"
    engine = QueryEngine.for_config(llm_config)
    assert any(isinstance(part, LlmReranker) for part, _ in engine.reranker.parts)
    hits = engine.search(question, k=5, rerank=True)
    assert len(hits) == 5
