"""Documents end to end: mixed folder → ingest → FTS/vector/hybrid search with locators → eval."""

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

pytestmark = pytest.mark.integration

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
    for rel, data in {**good, **{k: v for k, (v, _) in bad.items()}}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    config = load_config(profile="offline", overrides={"db_uri": str(root / "db")})
    summary = run_ingest(config, [str(root / "docs")])
    return root, config, summary


def test_every_good_document_is_indexed_and_every_bad_one_recorded(doc_db) -> None:
    root, config, summary = doc_db
    good, bad = mixed_corpus()
    assert summary.ingested == len(good)
    assert summary.failed == {cls: 1 for _, cls in bad.values()}
    store = Store(config.db_uri)
    chunks = store.read(schema.CHUNKS).to_pylist()
    by_uri: dict[str, list[dict]] = {}
    for row in chunks:
        by_uri.setdefault(row["uri"], []).append(row)
    assert set(by_uri) == {str(root / rel) for rel in good}
    for rows in by_uri.values():
        for row in rows:
            if row["modality"] == "text":
                assert row["text_vec"] is not None and row["clip"] is not None
                assert row["char_start"] < row["char_end"]
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
def test_paraphrased_questions_find_their_document_in_the_top_3(doc_db, question) -> None:
    root, config, _ = doc_db
    hits = QueryEngine.for_config(config).search(question, k=10, mode="hybrid")
    top_docs = list(dict.fromkeys(h.uri for h in hits))[:3]
    assert str(root / PARAPHRASES[question]) in top_docs


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
    hits = engine.search("What are the rings of Saturn made of?", k=5, mode="hybrid")
    pdf_hits = [h for h in hits if h.uri.endswith("astronomy.pdf")]
    assert pdf_hits and pdf_hits[0].page == 2
    only_page_3 = engine.search("ice", k=10, mode="fts", filters={"page": 3})
    assert only_page_3 and {h.page for h in only_page_3} == {3}


def test_eval_prints_modes_side_by_side_and_hybrid_holds_up(doc_db, tmp_path, capsys) -> None:
    root, config, _ = doc_db
    queries = {
        "q1": "sourdough starter fermentation",
        "q2": "How do bakers get an open crumb in their loaf?",
        "q3": "ash clouds from an eruption",
        "q4": "Why is soil near volcanoes good for farming?",
        "q5": "Sicilian Defence",
        "q6": "how to keep the king safe early in the game",
        "q7": "mirror or lens to gather light",
        "q8": "Why does a comet's tail point away from the Sun?",
        "q9": "quarterly harvest report",
    }
    relevant = {"q1": "bread.txt", "q2": "bread.txt", "q3": "volcano.md", "q4": "volcano.md",
                "q5": "chess.HTML", "q6": "chess.HTML", "q7": "astronomy.pdf",
                "q8": "astronomy.pdf", "q9": "harvest.pdf"}  # fmt: skip
    (tmp_path / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items())
    )
    (tmp_path / "qrels.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in relevant.items())
    )
    queries_file, qrels_file = str(tmp_path / "queries.jsonl"), str(tmp_path / "qrels.tsv")
    argv = ["eval", "--db", config.db_uri, "--profile", "offline",
            "--queries", queries_file, "--qrels", qrels_file]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert all(mode in table for mode in ("vector", "fts", "hybrid")) and "nDCG@10" in table
    assert main([*argv, "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    best_single = max(metrics["vector"]["nDCG@10"], metrics["fts"]["nDCG@10"])
    assert metrics["hybrid"]["nDCG@10"] >= best_single
    assert metrics["hybrid"]["recall@10"] == 1.0
