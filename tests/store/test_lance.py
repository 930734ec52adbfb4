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
    target = schema.chunks_schema(dim, dim)
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
    store.ensure_tables(clip_dim=4, text_dim=4)
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
    store.ensure_tables(clip_dim=4, text_dim=4)
    with pytest.raises(ConfigError, match="chunks.clip holds 4-d vectors"):
        store.ensure_tables(clip_dim=8, text_dim=4)


def test_empty_database_reads_clearly(tmp_path) -> None:
    store = Store(str(tmp_path / "db"))
    assert store.asset_states() == {}
    with pytest.raises(LookupError, match="mrag ingest"):
        store.read(schema.CHUNKS)


@pytest.mark.integration
def test_database_on_the_s3_server(s3_bucket: str) -> None:
    store = Store(f"s3://{s3_bucket}/db")
    store.ensure_tables(clip_dim=4, text_dim=4)
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


def test_drop_superseded_keeps_only_what_the_current_version_made(tmp_path) -> None:
    store = Store(str(tmp_path / "db"))
    store.ensure_tables(clip_dim=4, text_dim=4)
    odd = "/x/it's.jpg"  # a quote in a uri must not break (or widen) the predicate
    store.upsert(
        schema.ASSETS,
        _table(
            schema.assets_schema(),
            {
                "uri": ["/x/a.jpg", odd, "/x/untouched.jpg"],
                "asset_id": ["new-a", "new-b", "old-c"],
                "fingerprint": ["f2", "g2", "h1"],
                "status": ["ok", "failed", "ok"],
            },
        ),
    )
    chunks = _chunks(["c-old-a", "c-new-a", "c-old-b", "c-old-c"])
    chunks = chunks.set_column(1, "asset_id", pa.array(["old-a", "new-a", "old-b", "old-c"]))
    chunks = chunks.set_column(
        2, "uri", pa.array(["/x/a.jpg", "/x/a.jpg", odd, "/x/untouched.jpg"])
    )
    store.upsert(schema.CHUNKS, chunks)
    store.upsert(
        schema.ERRORS,
        _table(
            schema.errors_schema(),
            {
                "error_id": ["e1", "e2", "e3", "e4"],
                "uri": ["/x/a.jpg", odd, odd, "/x/untouched.jpg"],
                "fingerprint": ["f1", "g1", "g2", "h0"],
            },
        ),
    )

    store.drop_superseded(["/x/a.jpg", odd])

    assert sorted(store.read(schema.CHUNKS, ["chunk_id"])["chunk_id"].to_pylist()) == [
        "c-new-a",  # the current content of a.jpg
        "c-old-c",  # not re-ingested: not touched
    ]
    # a.jpg is ok now: no errors; it's.jpg still fails, with its current fingerprint only.
    assert sorted(store.read(schema.ERRORS, ["error_id"])["error_id"].to_pylist()) == ["e3", "e4"]
