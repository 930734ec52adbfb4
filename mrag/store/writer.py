"""The write stage: embedded chunk rows → ``chunks``, ``assets`` and ``errors`` (idempotent)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mrag.store import schema
from mrag.store.lance import Store

if TYPE_CHECKING:
    import pyarrow as pa


class LanceWriteStage:
    """Commits embedded chunk rows; one instance in one process (the ingest driver), so commits
    never race.

    Takes rows from the decode → embed chain (see ``mrag.decode.stage``) and returns one small
    summary row per input row (``uri``, ``error_class``, ``asset_status``) for the caller to
    count.

    Args:
        db_uri: the database.
        provenance: the models and weights the job checked the database against
            (:meth:`~mrag.store.lance.Store.ensure_tables`). Given, a row whose vector names
            other weights (an actor that loaded something else) is refused, and rows whose
            embed stage records no weights id get the job's.
    """

    def __init__(self, db_uri: str, provenance: schema.ChunkProvenance | None = None) -> None:
        self.store = Store(db_uri)
        self.provenance = provenance

    def __call__(self, rows: pa.Table) -> pa.Table:
        import pyarrow as pa
        import pyarrow.compute as pc

        now = pa.scalar(datetime.now(UTC), pa.timestamp("us", tz="UTC"))
        failed = pc.not_equal(rows["error_class"], "")
        good, bad = rows.filter(pc.invert(failed)), rows.filter(failed)

        chunks = {name: good[name] for name in good.column_names}
        if self.provenance is not None:
            chunks.update(_weights_ids(good, self.provenance))
        chunks["metadata"] = pa.array(
            [json.dumps({"title": t}) if t else None for t in good["title"].to_pylist()],
            pa.string(),
        )
        self.store.upsert(
            schema.CHUNKS, _conform(chunks, self._schema(schema.CHUNKS), good.num_rows)
        )

        errors = {name: bad[name] for name in ("uri", "error_class", "fingerprint")}
        errors["error_id"] = [
            schema.error_id(u, f, s)
            for u, f, s in zip(
                bad["uri"].to_pylist(),
                bad["fingerprint"].to_pylist(),
                bad["error_stage"].to_pylist(),
                strict=True,
            )
        ]
        errors["stage"] = bad["error_stage"]
        errors["message"] = bad["error_message"]
        errors["created_at"] = pa.array([now] * bad.num_rows, now.type)
        self.store.upsert(schema.ERRORS, _conform(errors, schema.errors_schema(), bad.num_rows))

        # One asset row per object; an object's chunk rows may span write batches, and
        # merge_insert on uri makes the repeats harmless (every row carries the asset's status).
        first_rows = _first_row_per_uri(rows)
        status = first_rows["asset_status"]
        assets = {name: first_rows[name] for name in ("asset_id", "uri", "size", "etag", "mtime",
                                                       "fingerprint", "n_chunks")}  # fmt: skip
        assets["modality"] = first_rows["asset_modality"]
        assets["status"] = status
        assets["ingested_at"] = pa.array([now] * first_rows.num_rows, now.type)
        assets["pipeline_version"] = pa.array([schema.PIPELINE_VERSION] * first_rows.num_rows)
        self.store.upsert(
            schema.ASSETS, _conform(assets, schema.assets_schema(), first_rows.num_rows)
        )
        return pa.table(
            {
                "uri": rows["uri"],
                "error_class": rows["error_class"],
                "asset_status": rows["asset_status"],
            }
        )

    def _schema(self, name: str) -> pa.Schema:
        return self.store.open(name).schema


def _weights_ids(rows: pa.Table, provenance: schema.ChunkProvenance) -> dict[str, pa.Array]:
    """The weights id columns for rows with vectors: checked against the job's, or filled in."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mrag.errors import MragError

    columns = {}
    for column, wanted in provenance.by_column().items():
        model_column, id_column = schema.VECTOR_COLUMNS[column]
        if column not in rows.column_names:
            continue
        has_vector = pc.is_valid(rows[column])
        if id_column not in rows.column_names:  # an embed stage that records no weights id
            ids = pa.repeat(pa.scalar(wanted.weights_id), rows.num_rows)
            columns[id_column] = pc.if_else(has_vector, ids, pa.scalar(None, pa.string()))
            continue
        made = rows.filter(has_vector)
        pairs = zip(made[model_column].to_pylist(), made[id_column].to_pylist(), strict=True)
        for model, weights_id in set(pairs):
            if not wanted.same_as(schema.VectorSource(model, weights_id or "")):
                raise MragError(
                    f"rows have {column} vectors made by {model} with {weights_id}, but the job "
                    f"checked the database for {wanted.model} with {wanted.weights_id}; "
                    "refusing to mix them in one column"
                )
    return columns


def _first_row_per_uri(rows: pa.Table) -> pa.Table:
    seen: set[str] = set()
    keep = []
    for i, uri in enumerate(rows["uri"].to_pylist()):
        if uri not in seen:
            seen.add(uri)
            keep.append(i)
    return rows.take(keep)


def _conform(columns: dict, table_schema: pa.Schema, n_rows: int) -> pa.Table:
    """A table in the target schema; columns a modality does not have are filled with nulls."""
    import pyarrow as pa

    arrays = []
    for field in table_schema:
        values = columns.get(field.name)
        if values is None:
            arrays.append(pa.nulls(n_rows, field.type))
        elif isinstance(values, pa.ChunkedArray | pa.Array):
            arrays.append(values.cast(field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.Table.from_arrays(arrays, schema=table_schema)
