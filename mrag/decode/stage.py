"""The decode stage: listed objects → read → decode → chunk rows, for every object kind.

Each object's kind (:mod:`mrag.kinds`, by extension) names its decoder: a generator of chunk
rows from an open, seekable stream (:mod:`mrag.decode`). All kinds share one row schema
(:func:`chunk_rows_schema`), so images, documents, PDF pages, recordings and videos flow
through the same embed and write stages:

- an image → one ``image`` row with pixels;
- a text/Markdown/HTML document → ``text`` rows, one per chunk, with character offsets;
- a PDF → per page, one ``pdf_page`` row (the rendered page, for the CLIP space) and ``text`` rows
  for the chunks of its text layer (or OCR), each with its 1-based ``page``;
- a recording → ``audio_segment`` rows (transcript, ``start_s``/``end_s``, audio samples);
- a video → ``video_frame`` keyframes, ``video_segment`` scenes and its audio's segments.

Pixels travel as raw RGB bytes (``image_size``² × 3 per frame, empty for text rows) and audio as
float32 16 kHz mono samples, so a batch can mix modalities. A bad object becomes a single row
with ``error_*`` set, never an exception; an object cut short keeps its rows and adds one.
"""

from __future__ import annotations

import contextlib
import io
from typing import TYPE_CHECKING, Any, BinaryIO

import pyarrow as pa

from mrag import storage
from mrag.config import object_kind
from mrag.decode import DecodeContext, load_decoder
from mrag.errors import DecodeError
from mrag.kinds import KINDS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mrag.config import IngestConfig
    from mrag.decode import SpeechSettings
    from mrag.kinds import ObjectKind
    from mrag.models import ImagePreprocess, ModelSpec


#: Rows a decode task gathers before handing a table on (small objects share tables: each
#: table costs a conversion and a block in Ray Data).
ROWS_PER_TABLE = 256


def chunk_rows_schema() -> pa.Schema:
    """Rows between decode and write: object metadata, chunk fields, model inputs, errors."""
    return pa.schema(
        [
            ("uri", pa.string()),
            ("size", pa.int64()),
            ("etag", pa.string()),
            ("mtime", pa.float64()),
            ("fingerprint", pa.string()),
            # The object may have rows of an older version (planning saw some): the committer
            # deletes them before its first new row lands.
            ("stale", pa.bool_()),
            ("asset_id", pa.string()),
            ("asset_modality", pa.string()),
            ("asset_status", pa.string()),  # ok, partial (some content left out) or failed
            ("n_chunks", pa.int32()),
            ("chunk_id", pa.string()),
            # The row's place in its object: chunks 0..n_chunks-1, the error row n_chunks. The
            # committer counts an object's rows by it and drops any it has already.
            ("ordinal", pa.int32()),
            ("modality", pa.string()),
            ("page", pa.int32()),
            ("start_s", pa.float64()),
            ("end_s", pa.float64()),
            ("char_start", pa.int64()),
            ("char_end", pa.int64()),
            ("text", pa.string()),
            ("title", pa.string()),
            ("context", pa.string()),  # "title — section" a text chunk is embedded/indexed with
            ("pixels", pa.binary()),
            ("audio", pa.binary()),  # float32 mono 16 kHz samples of an audio segment
            ("thumbnail", pa.binary()),
            ("width_px", pa.int32()),
            ("height_px", pa.int32()),
            ("error_stage", pa.string()),
            ("error_class", pa.string()),
            ("error_message", pa.string()),
        ]
    )


class DecodeStage:
    """Ray Data callable (also usable directly): a batch of listed objects → Arrow tables of
    rows, one table per object, so a long recording's rows leave as soon as it is done.

    Args:
        ingest: limits, chunking and media settings.
        image_size: the CLIP input side in pixels, with open_clip's default resize and crop;
            shorthand for ``preprocess=ImagePreprocess(image_size)``.
        text_spec: the text encoder whose tokenizer measures chunk length (``None``: a regex
            approximation).
        preprocess: the CLIP model's resize/crop (``clip_spec.image_preprocess``); wins over
            ``image_size``.
        text_weights: the job's ``text_weights`` override, for the tokenizer.
        speech: the recogniser for recordings and videos (``None``: no transcripts).
        keep_audio: audio rows carry their samples (a space of the job embeds sound).
    """

    def __init__(
        self,
        ingest: IngestConfig,
        image_size: int = 0,
        text_spec: ModelSpec | None = None,
        *,
        preprocess: ImagePreprocess | None = None,
        text_weights: str = "",
        speech: SpeechSettings | None = None,
        keep_audio: bool = False,
    ) -> None:
        from mrag.models import ImagePreprocess

        if preprocess is None:
            if image_size <= 0:
                raise ValueError("DecodeStage needs preprocess= or a positive image_size")
            preprocess = ImagePreprocess(image_size)
        self.ingest = ingest
        self.preprocess = preprocess
        self.context = DecodeContext(
            ingest, preprocess, text_spec, text_weights, speech, keep_audio
        )

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        """All the batch's rows in one table (tests, notebooks); Ray Data uses :meth:`tables`."""
        tables = list(self.tables(batch))
        return pa.concat_tables(tables) if tables else chunk_rows_schema().empty_table()

    def tables(self, batch: dict[str, Any]) -> Iterator[pa.Table]:
        """The batch's rows, a table as soon as a streamed object (a long recording) is done
        or :data:`ROWS_PER_TABLE` rows are ready; small objects share tables."""
        schema = chunk_rows_schema()
        rows: list[dict[str, Any]] = []
        for i in range(len(batch["uri"])):
            meta = {
                k: _scalar(batch[k][i]) for k in ("uri", "size", "etag", "mtime", "fingerprint")
            }
            meta["stale"] = bool(_scalar(batch["stale"][i])) if "stale" in batch else False
            rows += self._object_rows(meta)
            kind = KINDS.get(object_kind(meta["uri"], self.ingest.extensions) or "")
            if len(rows) >= ROWS_PER_TABLE or (kind is not None and not kind.in_memory):
                yield pa.Table.from_pylist(rows, schema=schema)
                rows = []
        if rows:
            yield pa.Table.from_pylist(rows, schema=schema)

    def _object_rows(self, meta: dict[str, Any]) -> list[dict[str, Any]]:
        uri = meta["uri"]
        kind_name = object_kind(uri, self.ingest.extensions) or "unknown"
        kind = KINDS.get(kind_name)
        identity = f"{uri}|{meta['fingerprint']}".encode()
        stage, asset_id = "read", storage.content_id(identity)
        chunks: list[dict[str, Any]] = []
        left_out: DecodeError | None = None
        try:
            if kind is None:
                raise DecodeError(
                    f"no decoder for this object type ({kind_name})", error_class="UnsupportedType"
                )
            limit = self.ingest.max_media_bytes if kind.streamed else self.ingest.max_object_bytes
            with self._open(uri, kind, limit) as (source, asset_id):
                stage = "decode"
                try:
                    for chunk in load_decoder(kind.decoder)(source, self.context):
                        chunks.append(chunk)
                except DecodeError as exc:
                    if not chunks:
                        raise
                    left_out = exc  # a partial result: what was decoded stays
            if not chunks:
                raise DecodeError("no content to index", error_class="EmptyObject")
        except DecodeError as exc:
            return [self._error_row(meta, kind_name, asset_id, stage, exc.error_class, str(exc))]
        except (OSError, ValueError) as exc:  # unreadable: vanished, permissions, over the size cap
            error_class = type(exc).__name__
            return [self._error_row(meta, kind_name, asset_id, stage, error_class, str(exc))]
        status = "partial" if left_out else "ok"
        rows = [
            {
                **meta,
                "asset_id": asset_id,
                "asset_modality": kind_name,
                "asset_status": status,
                "n_chunks": len(chunks),
                "chunk_id": storage.chunk_id(asset_id, chunk.pop("locator")),
                "ordinal": ordinal,
                "error_stage": "",
                "error_class": "",
                "error_message": "",
                **chunk,
            }
            for ordinal, chunk in enumerate(chunks)
        ]
        if left_out is not None:  # what was indexed stays; the rest is an error row
            notice = self._error_row(
                meta, kind_name, asset_id, "decode", left_out.error_class, str(left_out)
            )
            rows.append(
                {**notice, "asset_status": status, "n_chunks": len(chunks), "ordinal": len(chunks)}
            )
        return rows

    @staticmethod
    @contextlib.contextmanager
    def _open(uri: str, kind: ObjectKind, limit: int) -> Iterator[tuple[BinaryIO, str]]:
        """The object as a stream, and its ``asset_id``: read once into memory for kinds whose
        decoder needs the whole object, else hashed in one pass over the stream."""
        if kind.in_memory:
            data = storage.read_bytes(uri, max_bytes=limit)
            yield io.BytesIO(data), storage.content_id(data)
            return
        with storage.open_object(uri, max_bytes=limit) as source:
            yield source, storage.stream_content_id(source)

    def _error_row(
        self, meta: dict, kind: str, asset_id: str, stage: str, error_class: str, message: str
    ) -> dict[str, Any]:
        return {
            **meta,
            "asset_id": asset_id,
            "asset_modality": kind,
            "asset_status": "failed",
            "n_chunks": 0,
            "chunk_id": storage.chunk_id(asset_id, "error"),
            "ordinal": 0,
            "modality": kind,
            "error_stage": stage,
            "error_class": error_class,
            "error_message": message or error_class,
        }


def _scalar(value: Any) -> Any:
    """numpy scalars → Python values (pyarrow's from_pylist wants plain types)."""
    return value.item() if hasattr(value, "item") else value
