"""The notebooks are executed on their sample corpus: a notebook that does not run, or that shows
the wrong thing, is a bug. Each notebook ends with a JSON summary of what it showed; the tests
read it from the executed notebook's outputs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from nbformat import NotebookNode

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
DOCUMENTS = {"encrypt-files.txt": "text", "saturn.md": "markdown", "sourdough.html": "html"}


def execute(name: str, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> NotebookNode:
    """Runs ``notebooks/<name>`` top to bottom with ``MRAG_NOTEBOOK_DIR=workdir``, as a user's
    Jupyter would (a fresh python3 kernel); a cell that raises fails the test here."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("MRAG_NOTEBOOK_DIR", str(workdir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = str(NOTEBOOK_DIR.parent)
    monkeypatch.setenv("PYTHONPATH", root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    ).execute()
    errors = [o for cell in code_cells(notebook) for o in cell.outputs if o.output_type == "error"]
    assert not errors
    return notebook


def code_cells(notebook: NotebookNode) -> list[NotebookNode]:
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def summary(notebook: NotebookNode) -> dict[str, Any]:
    """The JSON document the last cell displays."""
    outputs = code_cells(notebook)[-1].outputs
    documents = [
        o.data["application/json"] for o in outputs if "application/json" in o.get("data", {})
    ]
    assert len(documents) == 1, outputs
    return documents[0]


def text_output(cell: NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def check_ingest(result: dict[str, Any], workdir: Path) -> None:
    corpus = {p.name for p in (workdir / "corpus").iterdir()}
    assert set(result["files"]) == corpus
    assert result["db_uri"] == str(workdir / "db")
    # Every good file is ingested; each broken one is an error row (and a failed asset), not a
    # crash. broken.jpg is one; more may come with the demo corpus.
    errors = {error["name"]: error for error in result["errors"]}
    broken = errors["broken.jpg"]
    assert broken["error_class"] == "TruncatedImage"
    assert "could not be decoded" in broken["message"]
    run = result["run"]
    assert run["seen"] == len(corpus)
    assert run["ingested"] == len(corpus) - len(errors)
    assert sum(run["failed"].values()) == len(errors)
    assert result["assets_by_status"] == {"ok": len(corpus) - len(errors), "failed": len(errors)}
    assert result["ok"] == sorted(corpus - set(errors))
    assert set(DOCUMENTS) <= set(result["ok"])
    by_modality = result["assets_by_modality"]
    assert set(DOCUMENTS.values()) <= set(by_modality)
    assert by_modality["image"] == sum(n.endswith((".jpg", ".png", ".webp")) for n in corpus)
    # Re-running reads nothing again.
    assert result["rerun"]["skipped"] == len(corpus)
    assert result["rerun"]["ingested"] == 0


def check_explore(result: dict[str, Any], workdir: Path) -> None:
    assert result["db_uri"] == str(workdir / "db")
    # Text search reaches the document about the question (MiniLM and BM25 have real weights).
    assert result["text_hits"][0] == "encrypt-files.txt"
    # Image search finds the exact image first, thumbnails included, whatever CLIP's weights.
    assert result["image_hits"][0] == result["image_query"]
    assert result["image_hit_scores"][0] == pytest.approx(1.0, abs=1e-3)
    assert result["image_hits_with_thumbnail"] == len(result["image_hits"]) == 5
    # The answer cites evidence, and every cited chunk is evidence taken from the hits.
    assert result["citations"]
    assert "gpg" in result["answer"] and "[1]" in result["answer"]
    evidence = {item["n"]: item for item in result["evidence"]}
    hit_chunks = set(result["hit_chunk_ids"])
    for citation in result["citations"]:
        item = evidence[citation["n"]]
        assert citation["chunk_ids"] == item["chunk_ids"]
        assert set(citation["chunk_ids"]) <= hit_chunks
    assert evidence[result["citations"][0]["n"]]["uri"] == "encrypt-files.txt"
    # The moment a sentence is said (at 6 s in the recording, about 4 s long), and a scene.
    name, start_s, end_s = result["spoken_hits"][0]
    assert name == "harbour-tour.wav" and start_s <= 6.8 and end_s >= 9.0 and end_s - start_s < 15
    name, start_s, end_s = result["scene_hits"][0]
    assert name == "three-scenes.mp4" and 2.7 <= start_s and end_s <= 6.4


@pytest.mark.integration
@pytest.mark.slow
def test_ingest_then_explore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tour as a user takes it: ingest.ipynb builds the database, explore.ipynb uses it."""
    check_ingest(summary(execute("ingest.ipynb", tmp_path, monkeypatch)), tmp_path)
    explore = execute("explore.ipynb", tmp_path, monkeypatch)
    assert "objects seen" not in text_output(code_cells(explore)[0])  # it did not ingest again
    check_explore(summary(explore), tmp_path)


@pytest.mark.integration
@pytest.mark.slow
def test_explore_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no database in MRAG_NOTEBOOK_DIR, explore.ipynb builds the sample one itself."""
    explore = execute("explore.ipynb", tmp_path, monkeypatch)
    corpus = list((tmp_path / "corpus").iterdir())
    setup = text_output(code_cells(explore)[0])
    assert f"objects seen {len(corpus)}, ingested {len(corpus) - 1}" in setup
    assert (tmp_path / "db").is_dir()
    check_explore(summary(explore), tmp_path)


def test_every_notebook_is_executed_by_a_test() -> None:
    assert {p.name for p in NOTEBOOKS} == {"ingest.ipynb", "explore.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_saved_without_outputs(path: Path) -> None:
    """Committed notebooks carry no outputs (the tests execute them), so diffs stay readable."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in code_cells(notebook):
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
