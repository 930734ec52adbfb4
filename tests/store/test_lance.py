from __future__ import annotations

import pyarrow as pa
import pytest

from mrag.errors import ConfigError
from mrag.store import schema
from mrag.store.lance import Store


def _chunks(ids: list[str], dim: int = 4) -> pa.Table:
    rows = {
        "chunk_id": ids,
        "asset_id": ["a"] * len(ids),
        "uri": [f"/x/{i}.jpg" for i in ids],
        "clip": pa.FixedSizeListArray.from_arrays(
            pa.array([1.0] * dim * len(ids), pa.float32()), dim
        ),
    }
    target = schema.chunks_schema({"clip": dim, "text_vec": dim})
    arrays = [
        pa.array(rows[f.name], f.type)
        if f.name in rows and f.name != "clip"
        else rows["clip"]
        if f.name == "clip"
        else pa.nulls(len(ids), f.type)
        for f in target
    ]
    return pa.Table.from_arrays(arrays, schema=target)


def test_upsert_is_idempotent_on_chunk_id(tmp_path) -> None:
    store = Store(str(tmp_path / "db"))
    store.ensure_tables({"clip": 4, "text_vec": 4})
    store.upsert(schema.CHUNKS, _chunks(["c1", "c2"]))
    store.upsert(schema.CHUNKS, _chunks(["c2", "c3"]))
    store.upsert(schema.CHUNKS, _chunks(["c1", "c2", "c3"]))
    assert store.count_rows(schema.CHUNKS) == 3
    assert sorted(store.read(schema.CHUNKS, ["chunk_id"])["chunk_id"].to_pylist()) == [
        "c1",
        "c2",
        "c3",
    ]


def test_refuses_a_database_built_for_another_vector_width(tmp_path) -> None:
    store = Store(str(tmp_path / "db"))
    store.ensure_tables({"clip": 4, "text_vec": 4})
    with pytest.raises(ConfigError, match="chunks.clip holds 4-d vectors"):
        store.ensure_tables({"clip": 8, "text_vec": 4})


def test_empty_database_reads_clearly(tmp_path) -> None:
    store = Store(str(tmp_path / "db"))
    assert store.asset_states() == {}
    with pytest.raises(LookupError, match="mrag ingest"):
        store.read(schema.CHUNKS)


@pytest.mark.integration
def test_database_on_the_s3_server(s3_bucket: str) -> None:
    store = Store(f"s3://{s3_bucket}/db")
    store.ensure_tables({"clip": 4, "text_vec": 4})
    store.upsert(schema.CHUNKS, _chunks(["c1"]))
    store.upsert(schema.CHUNKS, _chunks(["c1"]))
    assert Store(f"s3://{s3_bucket}/db").count_rows(schema.CHUNKS) == 1


def _table(target: pa.Schema, columns: dict[str, list]) -> pa.Table:
    n = len(next(iter(columns.values())))
    return pa.Table.from_arrays(
        [
            pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
            for f in target
        ],  # fmt: skip
        schema=target,
    )


def test_forget_removes_only_the_named_objects_rows(tmp_path) -> None:
    store = Store(str(tmp_path / "db"))
    store.ensure_tables({"clip": 4, "text_vec": 4})
    odd = "/x/it's.jpg"  # a quote in a uri must not break (or widen) the predicate
    chunks = _chunks(["c-a1", "c-a2", "c-b", "c-c"])
    chunks = chunks.set_column(2, "uri", pa.array(["/x/a.jpg", "/x/a.jpg", odd, "/x/kept.jpg"]))
    store.upsert(schema.CHUNKS, chunks)
    store.upsert(
        schema.ERRORS,
        _table(
            schema.errors_schema(),
            {"error_id": ["e1", "e2", "e3"], "uri": ["/x/a.jpg", odd, "/x/kept.jpg"]},
        ),
    )

    store.forget(["/x/a.jpg", odd])

    assert store.read(schema.CHUNKS, ["chunk_id"])["chunk_id"].to_pylist() == ["c-c"]
    assert store.read(schema.ERRORS, ["error_id"])["error_id"].to_pylist() == ["e3"]
