"""Table schemas and deterministic ids (see docs/architecture.md, "Data model").

Ids are content- and locator-derived (``asset_id``/``chunk_id`` from :mod:`mrag.storage`, where
the decode stage can reach them without importing the store), so a re-run computes the same
keys and ``merge_insert`` turns repeated work into no-ops instead of duplicate rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa

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


def chunks_schema(clip_dim: int, text_dim: int) -> pa.Schema:
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
            pa.field("clip", pa.list_(pa.float32(), clip_dim)),
            pa.field("clip_model", pa.string()),
            pa.field("text_vec", pa.list_(pa.float32(), text_dim)),
            pa.field("text_model", pa.string()),
            pa.field("metadata", pa.string()),  # JSON
            *PROVENANCE_FIELDS,
        ]
    )


#: Vector column → (model spec column, weights id column) of the ``chunks`` table.
VECTOR_COLUMNS = {
    "clip": ("clip_model", "clip_weights_id"),
    "text_vec": ("text_model", "text_weights_id"),
}

#: Which weights made each vector (:func:`mrag.models.weights_id`, e.g. ``local:/m/ckpt.bin
#: sha256:1f0c…``). Last in the schema: a database made before they existed lacks them, and
#: :meth:`~mrag.store.lance.Store.ensure_tables` adds them (null for the old rows).
PROVENANCE_FIELDS = (
    pa.field("clip_weights_id", pa.string()),
    pa.field("text_weights_id", pa.string()),
)


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


@dataclass(frozen=True)
class ChunkProvenance:
    """The sources of both vector columns of a job; one database holds one of each."""

    clip: VectorSource
    text: VectorSource

    def by_column(self) -> dict[str, VectorSource]:
        return {"clip": self.clip, "text_vec": self.text}


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


def sql_literal(value: str) -> str:
    """A string as a LanceDB (DataFusion SQL) literal, quotes escaped: safe for user values."""
    return "'" + value.replace("'", "''") + "'"
