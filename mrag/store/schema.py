"""Table schemas and deterministic ids (see docs/architecture.md, "Data model").

Ids are content- and locator-derived (``asset_id``/``chunk_id`` from :mod:`mrag.storage`, where
the decode stage can reach them without importing the store), so a re-run computes the same
keys and ``merge_insert`` turns repeated work into no-ops instead of duplicate rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

from mrag.spaces import SPACES

# The SQL literal of LanceDB filters lives with the other storage helpers (foundations use it).
from mrag.storage import sql_literal as sql_literal

PIPELINE_VERSION = "1"

ASSETS = "assets"
CHUNKS = "chunks"
ERRORS = "errors"


def error_id(uri: str, fingerprint: str, stage: str) -> str:
    """One error row per object version and stage: re-running a job does not duplicate it."""
    return hashlib.sha256(f"{uri}|{fingerprint}|{stage}".encode()).hexdigest()[:32]


def assets_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("asset_id", pa.string(), nullable=False),
            pa.field("uri", pa.string(), nullable=False),
            pa.field("size", pa.int64()),
            pa.field("etag", pa.string()),
            pa.field("mtime", pa.float64()),
            pa.field("fingerprint", pa.string()),
            pa.field("modality", pa.string()),
            pa.field("status", pa.string()),  # "ok", "partial" (see errors) or "failed"
            pa.field("n_chunks", pa.int32()),
            pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
            pa.field("pipeline_version", pa.string()),
        ]
    )


def chunks_schema(widths: Mapping[str, int]) -> pa.Schema:
    """The ``chunks`` schema with one vector column per space in ``widths`` (``{"clip": 512}``)
    and, per space, the columns naming the model and the weights that made each vector."""
    vectors = []
    for column, dim in widths.items():
        space = SPACES[column]
        vectors += [
            pa.field(column, pa.list_(pa.float32(), dim)),
            pa.field(space.model_column, pa.string()),
        ]
    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("asset_id", pa.string(), nullable=False),
            pa.field("uri", pa.string(), nullable=False),
            pa.field("modality", pa.string()),
            pa.field("page", pa.int32()),
            pa.field("start_s", pa.float64()),
            pa.field("end_s", pa.float64()),
            pa.field("char_start", pa.int64()),
            pa.field("char_end", pa.int64()),
            pa.field("text", pa.string()),
            pa.field("context", pa.string()),  # title — section, embedded/indexed with text
            pa.field("width_px", pa.int32()),
            pa.field("height_px", pa.int32()),
            pa.field("thumbnail", pa.binary()),
            *vectors,
            pa.field("metadata", pa.string()),  # JSON
            *provenance_fields(widths),
        ]
    )


def vector_columns() -> dict[str, tuple[str, str]]:
    """Vector column → (model spec column, weights id column), for every registered space."""
    return {c: (space.model_column, space.weights_id_column) for c, space in SPACES.items()}


def provenance_fields(columns: Mapping[str, int] | tuple[str, ...]) -> tuple[pa.Field, ...]:
    """Which weights made each vector (:func:`mrag.models.weights_id`, e.g. ``local:/m/ckpt.bin
    sha256:1f0c…``). Last in the schema: a database made before they existed lacks them, and
    :meth:`~mrag.store.lance.Store.ensure_tables` adds them (null for the old rows)."""
    return tuple(pa.field(SPACES[c].weights_id_column, pa.string()) for c in columns)


@dataclass(frozen=True)
class VectorSource:
    """What makes one vector column: a model spec's name and the id of its weights."""

    model: str
    weights_id: str

    @property
    def digest(self) -> str:
        """The part of ``weights_id`` that identifies the weights (``sha256:…``/``seed:…``),
        not where they were read from: the same file from S3 or a local copy is the same."""
        return self.weights_id.rsplit(" ", 1)[-1]

    def same_as(self, other: VectorSource) -> bool:
        return self.model == other.model and self.digest == other.digest


#: The source of each vector column of a job (``{"clip": VectorSource(...), ...}``); one
#: database holds one source per column.
ChunkProvenance = Mapping[str, VectorSource]


def errors_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("error_id", pa.string(), nullable=False),
            pa.field("uri", pa.string(), nullable=False),
            pa.field("stage", pa.string()),
            pa.field("error_class", pa.string()),
            pa.field("message", pa.string()),
            pa.field("fingerprint", pa.string()),
            pa.field("created_at", pa.timestamp("us", tz="UTC")),
        ]
    )
