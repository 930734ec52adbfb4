"""Indices on a synthetic chunks table: FTS, scalar, and a vector index chosen by row count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mrag.config import IndexConfig
from mrag.pipelines.index import build_indices, choose_vector_index
from mrag.retrieve.search import Retriever, SearchFilters
from mrag.store import schema
from mrag.store.lance import Store

WORDS = "river mountain bread engine violin harbor lantern orchard comet glacier".split()


def _fill(store: Store, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, 16))
    vectors = centers[rng.integers(0, 8, n)] + 0.3 * rng.normal(size=(n, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    texts = [" ".join(rng.choice(WORDS, 12)) for _ in range(n)]
    texts[7] = "the zephyrine quokka ledger appears exactly once"
    target = schema.chunks_schema({"clip": 16, "text_vec": 16})
    columns = {
        "chunk_id": [f"c{i}" for i in range(n)],
        "asset_id": [f"a{i // 4}" for i in range(n)],
        "uri": [f"s3://b/doc{i // 4}.txt" for i in range(n)],
        "modality": ["text"] * n,
        "page": [(i % 3) + 1 for i in range(n)],
        "text": texts,
        # Every fourth chunk's section is about telescopes; no chunk's text says so.
        "context": [
            f"Doc {i // 4} — {'Telescope optics' if i % 4 == 3 else 'Misc'}" for i in range(n)
        ],
        "clip": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 16),
        "text_vec": pa.FixedSizeListArray.from_arrays(pa.array(vectors[::-1].reshape(-1)), 16),
    }
    arrays = [
        columns[f.name] if f.name in ("clip", "text_vec")
        else pa.array(columns[f.name], f.type) if f.name in columns
        else pa.nulls(n, f.type)
        for f in target
    ]  # fmt: skip
    store.ensure_tables({"clip": 16, "text_vec": 16})
    store.upsert(schema.CHUNKS, pa.Table.from_arrays(arrays, schema=target))
    return vectors


def test_index_choice_follows_row_count() -> None:
    config = IndexConfig()
    assert choose_vector_index(50_000, 512, config) is None
    assert choose_vector_index(1_000_000, 512, config) == {
        "index_type": "IVF_HNSW_SQ",
        "num_partitions": 250,
    }
    big = choose_vector_index(9_000_000, 512, config)
    assert big == {"index_type": "IVF_PQ", "num_partitions": 3000, "num_sub_vectors": 128}


def test_small_table_gets_fts_and_scalar_indices_but_exact_vectors(tmp_path) -> None:
    store = Store(str(tmp_path / "db"))
    vectors = _fill(store, 120)
    report = build_indices(store, IndexConfig())
    assert report.fts == "created (+ context)"
    assert report.vector["clip"]["search"].startswith("exact")
    kinds = {tuple(i.columns): i.index_type for i in store.open(schema.CHUNKS).list_indices()}
    assert kinds[("text",)] == "FTS" and kinds[("modality",)] == "Bitmap"
    assert kinds[("context",)] == "FTS"
    retriever = Retriever(store)
    assert retriever.search_fts("zephyrine quokka", k=3)[0].chunk_id == "c7"
    assert retriever.search_vector(vectors[42], k=1)[0].chunk_id == "c42"
    paged = retriever.search_fts("river", k=50, filters=SearchFilters(page=2))
    assert paged and all(h.page == 2 for h in paged)
    assert build_indices(store, IndexConfig()).fts == "updated"


def test_full_text_search_adds_the_context_score_to_the_text_score(tmp_path) -> None:
    from mrag.config import RetrievalConfig

    store = Store(str(tmp_path / "db"))
    _fill(store, 120)
    build_indices(store, IndexConfig())
    # "telescope" is in no chunk's text: only the context index can find those sections.
    found = Retriever(store).search_fts("telescope optics", k=40)
    assert found and {int(h.chunk_id[1:]) % 4 for h in found} == {3}
    # A text match in a telescope section outranks the same words in another section.
    both = Retriever(store).search_fts("zephyrine quokka telescope", k=3)
    assert both[0].chunk_id == "c7" and both[0].score > found[0].score
    text_only = Retriever(store, RetrievalConfig(fts_context_boost=0))
    assert text_only.search_fts("telescope optics", k=5) == []


@pytest.mark.slow
def test_vector_index_is_built_past_the_threshold_and_recall_measured(tmp_path) -> None:
    store = Store(str(tmp_path / "db"))
    vectors = _fill(store, 600)
    config = IndexConfig(vector_min_rows=500, rows_per_partition=300, recall_sample=20)
    lines: list[str] = []
    report = build_indices(store, config, progress=lines.append)
    info = report.vector["clip"]
    assert (info["index_type"], info["num_partitions"]) == ("IVF_HNSW_SQ", 2)
    assert info["status"] == "built" and info["target_met"] and info["recall_at_10"] >= 0.95
    assert any(line.startswith("clip: building IVF_HNSW_SQ") for line in lines)
    # The settings the report shows are the ones searches use.
    settings = Retriever(store).index_settings("clip")
    assert (settings.nprobes, settings.refine_factor, settings.ef) == (
        info["nprobes"], info["refine_factor"], info["ef"]
    )  # fmt: skip
    assert f"nprobes={info['nprobes']}" in report.render()
    hybrid = Retriever(store).search(
        "hybrid", k=5, text="zephyrine quokka", vectors={"clip": vectors[7], "text_vec": vectors[0]}
    )
    assert hybrid[0].chunk_id == "c7"  # first in FTS and in the clip space

    # New rows: folded into the index; settings kept while the table is about the same size,
    # measured again once it has grown past index.retune_after_growth.
    again = build_indices(store, config).vector["clip"]
    assert again["status"] == "updated" and again["tuned_at"] == info["tuned_at"]
    vectors = _fill(store, 900, seed=3)  # 600 rows replaced, 300 new: +50 %
    grown = build_indices(store, config).vector["clip"]
    assert grown["status"] == "updated, re-tuned" and grown["rows"] == 900
    assert grown["target_met"] and grown["build_s"] is None  # re-tuned, not rebuilt
    assert Retriever(store).search_vector(vectors[850], k=1)[0].chunk_id == "c850"
    # Rebuilt under a threshold the table is now below: back to exact search, index dropped.
    exact = build_indices(store, IndexConfig(vector_min_rows=10_000), rebuild_vectors=True)
    assert exact.vector["clip"]["search"].startswith("exact")
    assert Retriever(store).index_settings("clip") is None


def test_index_command_reports_as_json_and_writes_the_run_report(tmp_path, capsys) -> None:
    import json

    from mrag.pipelines.index import main

    store = Store(str(tmp_path / "db"))
    _fill(store, 120)
    assert main(["--db", str(tmp_path / "db"), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["job"] == "index" and document["index"]["fts"] == "created (+ context)"
    assert document["index"]["vector"]["clip"]["search"].startswith("exact")
    written = Path(document["report_uri"])
    assert written.parent.name == "_runs"
    document.pop("report_uri")
    assert json.loads(written.read_text()) == document


def test_maintenance_compacts_and_removes_a_killed_writers_orphan_files(tmp_path) -> None:
    from datetime import timedelta

    import lance

    from mrag.pipelines.index import maintain

    store = Store(str(tmp_path / "db"))
    _fill(store, 40)
    _fill(store, 40, seed=1)  # same keys again: upserts make more fragments and versions
    table = store.open(schema.CHUNKS)
    dataset = table.to_lance()
    # A writer killed after writing its data files, before committing them.
    lance.fragment.write_fragments(dataset.to_table(limit=5), dataset.uri, schema=dataset.schema)
    data_dir = Path(dataset.uri) / "data"
    files_before = set(data_dir.iterdir())
    referenced = {Path(f.path).name for frag in dataset.get_fragments()
                  for f in frag.metadata.files}  # fmt: skip
    orphans = {p for p in files_before if p.name not in referenced}
    assert orphans
    rows = sorted(store.read(schema.CHUNKS, ["chunk_id"])["chunk_id"].to_pylist())

    report = maintain(store, keep_versions_for=timedelta(0))
    assert report.tables[schema.CHUNKS]["old_versions_removed"] >= 1
    assert not orphans & set(data_dir.iterdir())
    assert sorted(store.read(schema.CHUNKS, ["chunk_id"])["chunk_id"].to_pylist()) == rows
    assert len(store.open(schema.CHUNKS).to_lance().get_fragments()) == 1
