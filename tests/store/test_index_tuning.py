"""Self-tuning vector indices: the ladder, exact answers, the tuner, and the stored record."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mrag.config import IndexConfig
from mrag.retrieve.search import Retriever, SearchFilters
from mrag.store import index_tuning, schema
from mrag.store.index_tuning import IndexSpec, QuerySettings
from mrag.store.lance import Store

DIM = 32


def _store(tmp_path, n: int, seed: int = 0) -> tuple[Store, np.ndarray]:
    """``n`` chunks with clustered 32-d ``clip`` vectors; every 50th row is an image."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, DIM))
    vectors = centres[rng.integers(0, 8, n)] + 0.5 * rng.normal(size=(n, DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    store = Store(str(tmp_path / "db"))
    store.ensure_tables({"clip": DIM})
    table = store.open(schema.CHUNKS)
    rows = {
        "chunk_id": [f"c{i}" for i in range(n)],
        "asset_id": [f"a{i}" for i in range(n)],
        "uri": [f"/x/{i}.jpg" for i in range(n)],
        "modality": ["image" if i % 50 == 0 else "text" for i in range(n)],
        "clip": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
    }
    columns = [
        rows[f.name] if f.name == "clip"
        else pa.array(rows[f.name], f.type) if f.name in rows
        else pa.nulls(n, f.type)
        for f in table.schema
    ]  # fmt: skip
    store.append(schema.CHUNKS, pa.Table.from_arrays(columns, schema=table.schema))
    return store, vectors


def test_ladder_follows_row_count_and_vector_width() -> None:
    config = IndexConfig()
    assert index_tuning.index_ladder(99_999, 512, config) == []
    first, fallback = index_tuning.index_ladder(1_000_000, 512, config)
    assert first == IndexSpec("IVF_HNSW_SQ", 250)
    assert fallback == IndexSpec("IVF_PQ", 1000, num_sub_vectors=128)
    big = index_tuning.index_ladder(9_000_000, 384, config)
    assert [s.index_type for s in big] == ["IVF_PQ", "IVF_HNSW_SQ"]
    assert (big[0].num_partitions, big[0].num_sub_vectors) == (3000, 96)
    # Sub-vectors must divide the width: 66-d takes 6-d codes, not 4-d ones.
    odd = index_tuning.index_ladder(200_000, 66, IndexConfig(pq_min_rows=1))[0]
    assert odd.num_sub_vectors == 11


def test_settings_move_one_step_within_bounds() -> None:
    spec = IndexSpec("IVF_PQ", 100, num_sub_vectors=8)
    start = spec.start()
    assert start == QuerySettings(nprobes=2, refine_factor=2)
    assert spec.raised(start, "refine_factor") == QuerySettings(nprobes=2, refine_factor=3)
    assert spec.raised(QuerySettings(nprobes=90), "nprobes") == QuerySettings(nprobes=100)
    assert spec.raised(QuerySettings(nprobes=100), "nprobes") is None  # every partition
    assert spec.lowered(start, "nprobes") is None
    assert spec.knobs() == ("nprobes", "refine_factor")
    hnsw = IndexSpec("IVF_HNSW_SQ", 10)
    assert hnsw.knobs() == ("nprobes", "refine_factor", "ef") and hnsw.start().ef == 20


class _Recorder:
    """Stands in for a LanceDB query builder: records the settings applied to it."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str):
        def record(value: int) -> _Recorder:
            self.calls[name] = value
            return self

        return record


def test_settings_are_applied_as_tuned_at_any_depth() -> None:
    settings = QuerySettings(nprobes=12, refine_factor=8, ef=30)
    at_10 = settings.apply(_Recorder(), limit=10).calls
    assert at_10 == {"nprobes": 12, "refine_factor": 8, "ef": 80}  # ef >= limit x refine
    at_50 = settings.apply(_Recorder(), limit=50).calls
    assert at_50["refine_factor"] == 2 and at_50["ef"] == 100  # ~80 rows re-scored, not 400
    filtered = settings.apply(_Recorder(), limit=10, filtered=True).calls
    # A selective filter may search past nprobes partitions until the answer is full.
    assert filtered["minimum_nprobes"] == 12 and filtered["maximum_nprobes"] == 0


def test_exact_neighbours_agree_with_lancedb_flat_search(tmp_path) -> None:
    store, vectors = _store(tmp_path, 600)
    table = store.open(schema.CHUNKS)
    queries = vectors[[3, 77, 400]] + 0.05
    truth = index_tuning.exact_neighbours(table.to_lance(), "clip", queries, id_column="chunk_id")
    for query, ids in zip(queries, truth, strict=True):
        flat = (
            table.search(query, vector_column_name="clip")
            .distance_type("cosine")
            .bypass_vector_index()
            .limit(10)
            .select(["chunk_id", "_distance"])
            .to_arrow()["chunk_id"]
            .to_pylist()
        )
        assert ids.tolist() == flat
    images = index_tuning.exact_neighbours(
        table.to_lance(), "clip", queries, where="modality = 'image'", id_column="chunk_id"
    )
    assert all(int(c[1:]) % 50 == 0 for ids in images for c in ids) and len(images[0]) == 10
    # Without a filter or excluded rows: a row's nearest is not itself.
    again = index_tuning.exact_neighbours(
        table.to_lance(), "clip", vectors[[8]], own_rows=np.asarray([8], dtype=np.uint64)
    )
    assert 8 not in again[0].tolist() and len(again[0]) == 10


def test_sample_queries_are_not_rows_but_sit_among_them(tmp_path) -> None:
    store, vectors = _store(tmp_path, 600)
    dataset = store.open(schema.CHUNKS).to_lance()
    sample = index_tuning.table_sample(dataset, "clip", 20, rows_with_vectors=600)
    assert sample.queries.shape == (20, DIM) and sample.own_rows is None
    nearest_sims = (sample.queries @ vectors.T).max(axis=1)
    assert (nearest_sims < 0.9999).all()  # no query is a stored vector
    # ... but its nearest row is about as near as rows are to each other.
    row_sims = vectors[:100] @ vectors.T
    np.fill_diagonal(row_sims[:, :100], -1)
    typical = np.median(np.sqrt(2 - 2 * row_sims.max(axis=1)))
    assert 0.5 * typical < np.median(np.sqrt(2 - 2 * nearest_sims)) < 1.5 * typical
    assert all(len(ids) == 10 for ids in sample.truth)


@pytest.mark.slow
def test_tuner_raises_settings_to_the_target_and_the_query_path_reads_them(tmp_path) -> None:
    store, vectors = _store(tmp_path, 4000)
    table = store.open(schema.CHUNKS)
    # Coarse codes (8 dimensions each): the cheapest settings miss the target.
    spec = IndexSpec("IVF_PQ", 32, num_sub_vectors=4)
    config = IndexConfig(target_recall=0.95, recall_sample=60)
    sample = index_tuning.recall_sample(table, "clip", rows=4000, config=config)
    lines: list[str] = []
    built, build_s = index_tuning.build_index(table, "clip", spec, progress=lines.append)
    assert built.num_partitions == 15  # 4000 rows: Lance trains at most one per 256
    record = index_tuning.tune_index(
        table, "clip", built, sample, rows=4000, config=config, build_s=build_s,
        progress=lines.append,
    )  # fmt: skip
    assert record.target_met and record.recall_at_10_low >= 0.95 and record.recall_at_10 > 0.95
    assert record.settings != built.start() and record.measurements >= 3
    assert lines[0].startswith("clip: building IVF_PQ") and "recall@10" in lines[-1]

    # Stored in the table's configuration, and what the retriever searches with.
    table.checkout_latest()
    assert index_tuning.stored_tunings(table.to_lance())["clip"] == record
    retriever = Retriever(store)
    assert retriever.index_settings("clip") == record.settings
    # Fresh queries through the query path keep (about) the recall tuned on the sample.
    queries = vectors[::97][:30] + 0.02 * np.random.default_rng(1).normal(size=(30, DIM))
    truth = index_tuning.exact_neighbours(table.to_lance(), "clip", queries, id_column="chunk_id")
    found = [
        {h.chunk_id for h in retriever.search_vector(q.astype(np.float32), k=10)} for q in queries
    ]
    recall = np.mean([len(f & set(t)) / 10 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.9
    # A filter keeping 2 % of the rows still fills its answer with the nearest images.
    images = retriever.search_vector(queries[0], k=10, filters=SearchFilters(modality="image"))
    assert len(images) == 10 and all(h.modality == "image" for h in images)


@pytest.mark.slow
def test_an_unreachable_target_is_reported_not_hidden(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(index_tuning, "MAX_REFINE", 2)  # no exact re-scoring to lean on
    store, _ = _store(tmp_path, 3000)
    table = store.open(schema.CHUNKS)
    spec = IndexSpec("IVF_PQ", 8, num_sub_vectors=2)
    config = IndexConfig(target_recall=1.0, recall_sample=40)
    sample = index_tuning.recall_sample(table, "clip", rows=3000, config=config)
    built, _ = index_tuning.build_index(table, "clip", spec, progress=None)
    record = index_tuning.tune_index(
        table, "clip", built, sample, rows=3000, config=config, build_s=None
    )
    assert not record.target_met and record.to_dict()["target_met"] is False
    # Every setting was raised as far as it goes before giving up.
    assert (record.nprobes, record.refine_factor) == (8, 2)


def test_an_index_without_a_record_gets_the_measured_fallback(tmp_path) -> None:
    store, vectors = _store(tmp_path, 1200)
    table = store.open(schema.CHUNKS)
    table.create_index("clip", config=IndexSpec("IVF_PQ", 4, num_sub_vectors=4).lancedb_config())
    settings = Retriever(store).index_settings("clip")
    assert settings == QuerySettings(nprobes=4, refine_factor=20)  # 80/1024 of 4, >= 8, <= 4
    assert Retriever(store).search_vector(vectors[5], k=1)[0].chunk_id == "c5"
