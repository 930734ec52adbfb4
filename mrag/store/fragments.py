"""Worker side of the write: embedded rows → Lance data files (no commit) → a small receipt.

A fragment writer runs where the rows are (a Ray task beside the model), writes the ``chunks``
and ``errors`` rows of its batch as uncommitted Lance fragments, and hands back one receipt row:
the fragments' metadata and, per object, its ``assets`` fields and which of its rows the files
hold (ordinal spans). Vectors, thumbnails and text never leave the worker; the driver
(:mod:`mrag.store.commit`) commits the metadata. Ray Data's own Lance datasink writes the same
way (``lance.fragment.write_fragments`` on workers, one commit on the driver).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mrag.store import schema
from mrag.store.lance import null_bad_vectors

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import pyarrow as pa

    from mrag.store.lance import Store

log = logging.getLogger(__name__)

#: Asset fields every row carries; the receipt keeps them once per object.
ASSET_FIELDS = ("uri", "asset_id", "size", "etag", "mtime", "fingerprint", "n_chunks",
                "asset_modality", "asset_status")  # fmt: skip
#: Tries of one fragment write (an object store that hiccups); each builds its input anew.
WRITE_ATTEMPTS = 3


@dataclass(frozen=True)
class TableTarget:
    """Where one table's fragments go: the Lance dataset URI and its schema (field ids come
    from the dataset when the driver commits)."""

    uri: str
    schema: pa.Schema


@dataclass(frozen=True)
class WriteTargets:
    """The ``chunks`` and ``errors`` datasets a job writes to; built once on the driver
    (picklable: workers get it with their task)."""

    chunks: TableTarget
    errors: TableTarget
    storage_options: dict[str, str]

    @classmethod
    def for_store(cls, store: Store) -> WriteTargets:
        from mrag import storage

        def target(name: str) -> TableTarget:
            dataset = store.open(name).to_lance()
            return TableTarget(dataset.uri, dataset.schema)

        return cls(
            target(schema.CHUNKS),
            target(schema.ERRORS),
            storage.lance_storage_options(store.db_uri),
        )


def receipt_schema() -> pa.Schema:
    """One row per written batch: fragment metadata (JSON) and what each object got."""
    import pyarrow as pa

    asset = [
        ("uri", pa.string()), ("asset_id", pa.string()), ("size", pa.int64()),
        ("etag", pa.string()), ("mtime", pa.float64()), ("fingerprint", pa.string()),
        ("n_chunks", pa.int32()), ("asset_modality", pa.string()),
        ("asset_status", pa.string()),
    ]  # fmt: skip
    per_object = pa.struct(
        [
            *asset,
            ("stale", pa.bool_()),  # rows of an older version may exist: forget them first
            ("spans", pa.list_(pa.int32())),  # ordinals held, as [start, end) pairs
            ("error_class", pa.string()),  # of the object's error row in this batch, or ""
            ("error_stage", pa.string()),
        ]
    )
    return pa.schema(
        [
            ("chunk_fragments", pa.string()),  # JSON list of FragmentMetadata.to_json()
            ("error_fragments", pa.string()),
            ("objects", pa.list_(per_object)),
            ("rows", pa.int64()),
            ("bytes", pa.int64()),  # of the rows written (what did not travel to the driver)
        ]
    )


class FragmentWriter:
    """Writes one batch of embedded rows as uncommitted fragments; returns its receipt.

    Args:
        targets: the datasets (:meth:`WriteTargets.for_store` on the driver).
        provenance: the models and weights the job checked the database against; a row whose
            vector names other weights is refused, rows without a weights id get the job's.
        batch_written: called after each record batch is handed to Lance (its index), for
            progress and fault-injection tests.
    """

    def __init__(
        self,
        targets: WriteTargets,
        provenance: schema.ChunkProvenance | None = None,
        *,
        batch_written: Callable[[int], None] | None = None,
    ) -> None:
        self.targets = targets
        self.provenance = provenance
        self.batch_written = batch_written

    def __call__(self, rows: pa.Table) -> pa.Table:
        import pyarrow as pa
        import pyarrow.compute as pc

        rows = _sorted_by_object(rows)
        failed = pc.not_equal(rows["error_class"], "")
        good, bad = rows.filter(pc.invert(failed)), rows.filter(failed)
        chunks = chunk_table(good, self.targets.chunks.schema, self.provenance)
        errors = error_table(bad)
        chunk_fragments = self._write(self.targets.chunks, chunks)
        error_fragments = self._write(self.targets.errors, errors)
        receipt = {
            "chunk_fragments": json.dumps(chunk_fragments),
            "error_fragments": json.dumps(error_fragments),
            "objects": object_entries(rows),
            "rows": rows.num_rows,
            "bytes": chunks.nbytes + errors.nbytes,
        }
        return pa.Table.from_pylist([receipt], schema=receipt_schema())

    def _write(self, target: TableTarget, table: pa.Table) -> list[dict[str, Any]]:
        """The table as fragments of ``target``; retried, each try from a new reader (a reader
        a failed try half consumed would silently write only the rest)."""
        from lance.fragment import write_fragments

        if table.num_rows == 0:
            return []
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                fragments = write_fragments(
                    self._reader(table),
                    target.uri,
                    schema=target.schema,
                    max_rows_per_file=max(table.num_rows, 1),
                    storage_options=self.targets.storage_options or None,
                )
                return [fragment.to_json() for fragment in fragments]
            except OSError as exc:  # transient object-store trouble: the next try starts over
                if attempt == WRITE_ATTEMPTS:
                    raise
                log.warning("fragment write to %s failed (%s); retrying", target.uri, exc)
                time.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    def _reader(self, table: pa.Table) -> pa.RecordBatchReader:
        import pyarrow as pa

        def batches() -> Iterator[pa.RecordBatch]:
            for index, batch in enumerate(table.to_batches(max_chunksize=1024)):
                yield batch
                if self.batch_written is not None:
                    self.batch_written(index)

        return pa.RecordBatchReader.from_batches(table.schema, batches())


def _sorted_by_object(rows: pa.Table) -> pa.Table:
    """Rows grouped by object, each object's by ordinal: the files' row order then follows
    from the receipt alone (the driver maps a file row back to its object that way)."""
    return rows.sort_by([("uri", "ascending"), ("ordinal", "ascending")])


def object_entries(rows: pa.Table) -> list[dict[str, Any]]:
    """Per object of ``rows`` (sorted by object): its asset fields, once, and the spans of
    ordinals its rows have here."""
    columns = {name: rows[name].to_pylist() for name in (*ASSET_FIELDS, "ordinal", "stale",
               "error_class", "error_stage")}  # fmt: skip
    entries: list[dict[str, Any]] = []
    for i, uri in enumerate(columns["uri"]):
        ordinal = columns["ordinal"][i]
        if not entries or entries[-1]["uri"] != uri:
            entry = {name: columns[name][i] for name in ASSET_FIELDS}
            entry.update(stale=bool(columns["stale"][i]), spans=[], error_class="", error_stage="")
            entries.append(entry)
        entry = entries[-1]
        spans = entry["spans"]
        if spans and spans[-1] == ordinal:
            spans[-1] = ordinal + 1
        else:
            spans += [ordinal, ordinal + 1]
        if columns["error_class"][i]:
            entry["error_class"] = columns["error_class"][i]
            entry["error_stage"] = columns["error_stage"][i]
    return entries


def chunk_table(
    rows: pa.Table, table_schema: pa.Schema, provenance: schema.ChunkProvenance | None
) -> pa.Table:
    """Embedded chunk rows in the ``chunks`` schema (weights ids checked or filled in)."""
    import pyarrow as pa

    columns = {name: rows[name] for name in rows.column_names}
    if provenance is not None:
        columns.update(_weights_ids(rows, provenance))
    columns["metadata"] = pa.array(
        [json.dumps({"title": t}) if t else None for t in rows["title"].to_pylist()], pa.string()
    )
    return null_bad_vectors(conform(columns, table_schema, rows.num_rows))


def error_table(rows: pa.Table) -> pa.Table:
    """Error rows (``error_class`` set) in the ``errors`` schema."""
    from datetime import UTC, datetime

    import pyarrow as pa

    now = pa.scalar(datetime.now(UTC), pa.timestamp("us", tz="UTC"))
    columns = {name: rows[name] for name in ("uri", "error_class", "fingerprint")}
    columns["error_id"] = [
        schema.error_id(u, f, s)
        for u, f, s in zip(
            rows["uri"].to_pylist(),
            rows["fingerprint"].to_pylist(),
            rows["error_stage"].to_pylist(),
            strict=True,
        )
    ]
    columns["stage"] = rows["error_stage"]
    columns["message"] = rows["error_message"]
    columns["created_at"] = pa.array([now] * rows.num_rows, now.type)
    return conform(columns, schema.errors_schema(), rows.num_rows)


def _weights_ids(rows: pa.Table, provenance: schema.ChunkProvenance) -> dict[str, pa.Array]:
    """The weights id columns for rows with vectors: checked against the job's, or filled in."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from mrag.errors import MragError

    columns = {}
    for column, wanted in provenance.items():
        model_column, id_column = schema.vector_columns()[column]
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


def conform(columns: dict, table_schema: pa.Schema, n_rows: int) -> pa.Table:
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
