"""The write stage: embedded rows → ``chunks``, ``assets`` and ``errors`` (idempotent upserts)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mrag.store import schema
from mrag.store.lance import Store

if TYPE_CHECKING:
    import pyarrow as pa


class LanceWriteStage:
    """Ray Data callable class (run as a single actor so commits never race).

    Takes rows produced by a decode + embed chain and returns one small summary row per object
    (``uri``, ``status``, ``error_class``) for the driver to count.
    """

    def __init__(self, db_uri: str) -> None:
        self.store = Store(db_uri)

    def __call__(self, rows: pa.Table) -> pa.Table:
        import pyarrow as pa
        import pyarrow.compute as pc

        now = datetime.now(UTC)
        failed_mask = pc.not_equal(rows["error_class"], "")
        good = rows.filter(pc.invert(failed_mask))
        bad = rows.filter(failed_mask)
        n_good = good.num_rows

        chunk_schema = self.store.open(schema.CHUNKS).schema
        chunks = {
            "chunk_id": good["chunk_id"],
            "asset_id": good["asset_id"],
            "uri": good["uri"],
            "modality": good["modality"],
            "width_px": good["width_px"],
            "height_px": good["height_px"],
            "thumbnail": good["thumbnail"],
            "clip": good["clip"],
            "clip_model": good["clip_model"],
        }
        self.store.upsert(schema.CHUNKS, _conform(chunks, chunk_schema, n_good))

        errors = {
            "error_id": [
                schema.error_id(u, f, s)
                for u, f, s in zip(
                    bad["uri"].to_pylist(),
                    bad["fingerprint"].to_pylist(),
                    bad["error_stage"].to_pylist(),
                    strict=True,
                )
            ],
            "uri": bad["uri"],
            "stage": bad["error_stage"],
            "error_class": bad["error_class"],
            "message": bad["error_message"],
            "fingerprint": bad["fingerprint"],
            "created_at": pa.array([now] * bad.num_rows, pa.timestamp("us", tz="UTC")),
        }
        self.store.upsert(schema.ERRORS, _conform(errors, schema.errors_schema(), bad.num_rows))

        ok = pc.invert(failed_mask)
        assets = {
            "asset_id": rows["asset_id"],
            "uri": rows["uri"],
            "size": rows["size"],
            "etag": rows["etag"],
            "mtime": rows["mtime"],
            "fingerprint": rows["fingerprint"],
            "modality": rows["modality"],
            "status": pc.if_else(ok, "ok", "failed"),
            "n_chunks": pc.if_else(ok, 1, 0),
            "ingested_at": pa.array([now] * rows.num_rows, pa.timestamp("us", tz="UTC")),
            "pipeline_version": pa.array([schema.PIPELINE_VERSION] * rows.num_rows),
        }
        self.store.upsert(schema.ASSETS, _conform(assets, schema.assets_schema(), rows.num_rows))
        return pa.table(
            {
                "uri": rows["uri"],
                "status": pc.if_else(ok, "ok", "failed"),
                "error_class": rows["error_class"],
            }
        )


def _conform(columns: dict, table_schema: pa.Schema, n_rows: int) -> pa.Table:
    """Builds a table in the target schema, filling columns a modality does not have with nulls."""
    import pyarrow as pa

    arrays = []
    for field in table_schema:
        if field.name in columns:
            arrays.append(
                pa.array(columns[field.name]).cast(field.type)
                if not isinstance(columns[field.name], pa.ChunkedArray)
                else columns[field.name].cast(field.type)
            )
        else:
            arrays.append(pa.nulls(n_rows, field.type))
    return pa.Table.from_arrays(arrays, schema=table_schema)
