"""LanceDB access: open a database (local folder or ``s3://``), create tables, idempotent writes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mrag import storage
from mrag.errors import TableNotFoundError
from mrag.store import schema

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import lancedb
    import pyarrow as pa

log = logging.getLogger(__name__)

_KEYS = {schema.ASSETS: "uri", schema.CHUNKS: "chunk_id", schema.ERRORS: "error_id"}
#: BTREE indices made with each table: the key (``merge_insert`` joins on it through the index
#: instead of scanning the column) and ``uri`` (what ``forget`` and ``prune`` delete by).
_KEY_INDICES = {
    schema.ASSETS: ("uri",),
    schema.CHUNKS: ("chunk_id", "uri"),
    schema.ERRORS: ("error_id", "uri"),
}


class Store:
    """The three mrag tables in one LanceDB database.

    Cheap to construct and picklable as a URI: Ray workers build their own ``Store`` from the URI
    rather than receiving a connection.
    """

    def __init__(self, db_uri: str) -> None:
        import lancedb

        self.db_uri = db_uri
        self._db: lancedb.DBConnection = lancedb.connect(
            db_uri, storage_options=storage.lance_storage_options(db_uri) or None
        )

    def table_names(self) -> list[str]:
        return list(self._db.table_names())

    def open(self, name: str) -> lancedb.table.Table | None:
        """The table, or ``None`` when nothing was ever ingested into this database."""
        return self._db.open_table(name) if name in self.table_names() else None

    def ensure_tables(
        self, widths: Mapping[str, int], provenance: schema.ChunkProvenance | None = None
    ) -> None:
        """Creates missing tables (``chunks`` with a vector column per space in ``widths``,
        ``{"clip": 512, "text_vec": 384}``); refuses a ``chunks`` table whose vectors are not
        comparable with the job's: other widths, or (given ``provenance``) another model spec
        or other weights. Vectors of two weights in one column would rank against each other as
        if they were the same space, and nothing downstream could tell them apart.

        A ``chunks`` table made before a space (or the weights columns) existed gains its
        columns, null for the old rows; old rows without weights are checked by model name.
        """

        existing = set(self.table_names())
        wanted = {
            schema.ASSETS: schema.assets_schema(),
            schema.CHUNKS: schema.chunks_schema(widths),
            schema.ERRORS: schema.errors_schema(),
        }
        for name, table_schema in wanted.items():
            if name not in existing:
                self._db.create_table(name, schema=table_schema, exist_ok=True)
            self._ensure_key_indices(name)
        self._add_missing_columns(wanted[schema.CHUNKS])
        self.check_vector_widths(widths)
        if provenance is not None:
            self._check_provenance(provenance)

    def _add_missing_columns(self, target: pa.Schema) -> None:
        table = self._db.open_table(schema.CHUNKS)
        missing = [f for f in target if f.name not in table.schema.names]
        if missing:
            log.info("%s: adding %s to chunks", self.db_uri, ", ".join(f.name for f in missing))
            table.add_columns(missing)

    def _ensure_key_indices(self, name: str) -> None:
        table = self._db.open_table(name)
        indexed = {tuple(i.columns) for i in table.list_indices()}
        for column in _KEY_INDICES[name]:
            if (column,) not in indexed:
                table.to_lance().create_scalar_index(column, index_type="BTREE")

    def check_vector_widths(self, widths: dict[str, int]) -> None:
        """The one vector-width check (ingest and serve): ``{"clip": 512}`` must match the
        ``chunks`` columns' widths, else a :class:`ConfigError` naming both. No table, no check."""
        from mrag.errors import ConfigError

        table = self.open(schema.CHUNKS)
        if table is None:
            return
        for column, dim in widths.items():
            if column not in table.schema.names:  # a space the database has no rows of yet
                continue
            have = table.schema.field(column).type.list_size
            if have != dim:
                raise ConfigError(
                    f"{self.db_uri}: chunks.{column} holds {have}-d vectors but the configured "
                    f"model makes {dim}-d ones; use the models the database was built with or "
                    "a new --db"
                )

    def _check_provenance(self, provenance: schema.ChunkProvenance) -> None:
        from mrag.errors import ConfigError

        table = self._db.open_table(schema.CHUNKS)
        dataset = table.to_lance()
        for column, wanted in provenance.items():
            model_column, id_column = schema.vector_columns()[column]
            have = None
            for recorded in (id_column, model_column):  # older rows may name the model only
                # Filtered on the string column alone: ms on 500k rows, where adding
                # ``{column} IS NOT NULL`` reads vectors (0.3 s).
                found = dataset.to_table(
                    columns=[model_column, id_column], filter=f"{recorded} IS NOT NULL", limit=1
                ).to_pylist()
                if found:
                    have = schema.VectorSource(found[0][model_column], found[0][id_column] or "")
                    break
            if have is None:
                continue
            same = have.same_as(wanted) if have.weights_id else have.model == wanted.model
            if not same:
                made_by = f"{have.model} with {have.weights_id or 'unrecorded weights'}"
                raise ConfigError(
                    f"{self.db_uri}: chunks.{column} holds vectors made by {made_by}, but this "
                    f"job would add vectors made by {wanted.model} with {wanted.weights_id}; "
                    "vectors of different weights are not comparable. Use the model and weights "
                    "the database was built with, or a new --db"
                )

    def upsert(self, name: str, rows: pa.Table) -> None:
        """Inserts rows, replacing any with the same key: re-running a write adds nothing."""
        if rows.num_rows == 0:
            return
        table = self._db.open_table(name)
        (
            table.merge_insert(_KEYS[name])
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(rows, on_bad_vectors="null")  # null = "no vector in this space"
        )

    def append(self, name: str, rows: pa.Table, properties: dict[str, str] | None = None) -> int:
        """Appends rows in one commit and returns the table version it made.

        No key join: the cost is the batch's, whatever the table's size. The caller guarantees
        the keys are new (the ingest job forgets an object's rows before it writes them again,
        and its one committer drops repeats; docs/architecture.md, "Commit protocol").
        ``properties`` are recorded with the transaction (``read_transaction(version)``).
        """
        dataset = self._db.open_table(name).to_lance()
        if rows.num_rows == 0:
            return dataset.version
        # ``insert`` moves this dataset object to the version its commit made.
        dataset.insert(
            null_bad_vectors(rows), mode="append", transaction_properties=properties or {}
        )
        return dataset.version

    def forget(
        self, uris: Sequence[str], batch_size: int = 500, *, tables: Sequence[str] | None = None
    ) -> int:
        """Deletes every row of these objects (their chunks, errors and ``assets`` row, unless
        ``tables`` says otherwise) before they are ingested again; returns the rows deleted.

        Done before the new version is written, not after: from then on the object has no
        ``assets`` row, so a job that dies before the object is complete leaves it to be redone,
        never skipped with stale or missing rows. Deletes go through the ``uri`` index and only
        batches that match anything commit a version. Only the given uris are touched.
        """
        deleted = 0
        for name in tables or (schema.CHUNKS, schema.ERRORS, schema.ASSETS):
            table = self.open(name)
            if table is None or table.count_rows() == 0:
                continue
            for start in range(0, len(uris), batch_size):
                wanted = ", ".join(schema.sql_literal(u) for u in uris[start : start + batch_size])
                predicate = f"uri IN ({wanted})"
                found = table.count_rows(predicate)
                if found:
                    table.delete(predicate)
                    deleted += found
        return deleted

    def asset_table(self) -> pa.Table:
        """``uri``, ``fingerprint``, ``status`` of every object processed before (Arrow, not
        Python objects: the planning join runs in Arrow whatever the corpus size)."""
        import pyarrow as pa

        assets = self.open(schema.ASSETS)
        if assets is None:
            return pa.table(
                {c: pa.array([], pa.string()) for c in ("uri", "fingerprint", "status")}
            )
        return assets.to_lance().to_table(columns=["uri", "fingerprint", "status"])

    def asset_states(self) -> dict[str, tuple[str, str]]:
        """``uri → (fingerprint, status)`` of every object processed before, to skip unchanged
        ones (reads two small columns, not the table)."""
        assets = self.open(schema.ASSETS)
        if assets is None:
            return {}
        rows = assets.to_lance().to_table(columns=["uri", "fingerprint", "status"])
        return {
            uri: (fingerprint, status)
            for uri, fingerprint, status in zip(
                *(rows[c].to_pylist() for c in ("uri", "fingerprint", "status")), strict=True
            )
        }

    def optimize(self) -> None:
        """Compacts the small fragments that streaming writes leave behind (faster scans) and
        folds the rows appended since into every index. Old versions are kept (LanceDB's
        default of 7 days): a reader may still be on one."""
        for name in self.table_names():
            self._db.open_table(name).optimize()

    def count_rows(self, name: str) -> int:
        table = self.open(name)
        return 0 if table is None else table.count_rows()

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        table = self.open(name)
        if table is None:
            raise TableNotFoundError(f"{self.db_uri} has no {name} table; run `mrag ingest` first")
        return table.to_lance().to_table(columns=columns)


def null_bad_vectors(rows: pa.Table) -> pa.Table:
    """Vectors holding NaN become null ("no vector in this space"), as LanceDB's
    ``on_bad_vectors="null"`` does for its own writes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for index, field in enumerate(rows.schema):
        if not pa.types.is_fixed_size_list(field.type) or rows.num_rows == 0:
            continue
        column = rows.column(index).combine_chunks()
        size = field.type.list_size
        values = column.values.slice(column.offset * size, len(column) * size)
        nan = pc.fill_null(pc.is_nan(values), False).to_numpy(zero_copy_only=False)
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        bad = nan.reshape(len(column), size).any(axis=1) & valid
        if not bad.any():
            continue
        cleaned = pc.if_else(pa.array(bad), pa.nulls(len(column), field.type), column)
        rows = rows.set_column(index, field, cleaned)
    return rows
