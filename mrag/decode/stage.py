"""The decode stage: listed objects → read → decode → chunk rows, for every modality.

One object becomes one or more *chunk rows* in a single schema (:func:`chunk_rows_schema`), so
images, documents and PDF pages flow through the same embed and write stages:

- an image → one ``image`` row with pixels;
- a text/Markdown/HTML document → ``text`` rows, one per chunk, with character offsets;
- a PDF → per page, one ``pdf_page`` row (the rendered page, for the CLIP space) and ``text`` rows
  for the chunks of its text layer (or OCR), each with its 1-based ``page``.

Pixels travel as raw RGB bytes (``image_size``² × 3, empty for text rows) so a batch can mix
modalities. A bad object becomes a single row with ``error_*`` set, never an exception.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from mrag import storage
from mrag.config import object_kind
from mrag.decode.image import decode_image, thumbnail_jpeg
from mrag.decode.text import DecodedText
from mrag.errors import DecodeError

if TYPE_CHECKING:
    from collections.abc import Callable

    from mrag.config import IngestConfig
    from mrag.models import ImagePreprocess, ModelSpec


def chunk_rows_schema() -> pa.Schema:
    """Rows between decode and write: object metadata, chunk fields, pixels, errors."""
    return pa.schema(
        [
            ("uri", pa.string()),
            ("size", pa.int64()),
            ("etag", pa.string()),
            ("mtime", pa.float64()),
            ("fingerprint", pa.string()),
            ("asset_id", pa.string()),
            ("asset_modality", pa.string()),
            ("asset_status", pa.string()),  # ok, partial (some content left out) or failed
            ("n_chunks", pa.int32()),
            ("chunk_id", pa.string()),
            ("modality", pa.string()),
            ("page", pa.int32()),
            ("char_start", pa.int64()),
            ("char_end", pa.int64()),
            ("text", pa.string()),
            ("title", pa.string()),
            ("context", pa.string()),  # "title — section" a text chunk is embedded/indexed with
            ("pixels", pa.binary()),
            ("thumbnail", pa.binary()),
            ("width_px", pa.int32()),
            ("height_px", pa.int32()),
            ("error_stage", pa.string()),
            ("error_class", pa.string()),
            ("error_message", pa.string()),
        ]
    )


@functools.cache
def _token_counter(spec: ModelSpec | None, weights: str = "") -> Callable[[str], int] | None:
    """The text model's own tokenizer, so chunk windows match what the encoder sees.

    ``weights`` is the job's ``text_weights`` override, resolved exactly as the embed actor
    resolves it: a spec without weights of its own (a hub id, offline) works when the user
    supplies them. Loads ``tokenizer.json`` with the ``tokenizers`` library when the weights
    have one (the same fast tokenizer transformers wraps, without importing transformers and
    torch into every decode worker: ~2 s of CPU per worker on a small node); else transformers'
    AutoTokenizer.
    """
    if spec is None:
        return None
    from mrag.models import resolve_weights

    resolved = resolve_weights(spec, weights)
    tokenizer_file = resolved.path / "tokenizer.json" if resolved.path else None
    if tokenizer_file is not None and tokenizer_file.is_file():
        from tokenizers import Tokenizer

        fast = Tokenizer.from_file(str(tokenizer_file))
        fast.no_truncation()  # a window is measured whole, not cut at the encoder's limit
        fast.no_padding()
        return lambda text: len(fast.encode(text, add_special_tokens=False).ids)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolved.path), local_files_only=True)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


class DecodeStage:
    """Ray Data callable (also usable directly): a batch of listed objects → a ``pa.Table`` of rows.

    Args:
        ingest: limits and chunking settings.
        image_size: the CLIP input side in pixels, with open_clip's default resize and crop;
            shorthand for ``preprocess=ImagePreprocess(image_size)``.
        text_spec: the text encoder whose tokenizer measures chunk length (``None``: a regex
            approximation).
        preprocess: the CLIP model's resize/crop (``clip_spec.image_preprocess``); wins over
            ``image_size``.
        text_weights: the job's ``text_weights`` override, for the tokenizer.
    """

    def __init__(
        self,
        ingest: IngestConfig,
        image_size: int = 0,
        text_spec: ModelSpec | None = None,
        *,
        preprocess: ImagePreprocess | None = None,
        text_weights: str = "",
    ) -> None:
        from mrag.models import ImagePreprocess

        if preprocess is None:
            if image_size <= 0:
                raise ValueError("DecodeStage needs preprocess= or a positive image_size")
            preprocess = ImagePreprocess(image_size)
        self.ingest = ingest
        self.preprocess = preprocess
        self.image_size = preprocess.size_px
        self.text_spec = text_spec
        self.text_weights = text_weights

    def __call__(self, batch: dict[str, Any]) -> pa.Table:
        rows: list[dict[str, Any]] = []
        for i in range(len(batch["uri"])):
            meta = {
                k: _scalar(batch[k][i]) for k in ("uri", "size", "etag", "mtime", "fingerprint")
            }
            rows.extend(self._object_rows(meta))
        return pa.Table.from_pylist(rows, schema=chunk_rows_schema())

    def _object_rows(self, meta: dict[str, Any]) -> list[dict[str, Any]]:
        uri = meta["uri"]
        kind = object_kind(uri, self.ingest.extensions) or "unknown"
        stage, data = "read", b""
        try:
            data = storage.read_bytes(uri, max_bytes=self.ingest.max_object_bytes)
            stage = "decode"
            chunks, left_out = self._decode(kind, data)
            if not chunks:
                raise DecodeError("no content to index", error_class="EmptyObject")
        except DecodeError as exc:
            return [self._error_row(meta, kind, data, stage, exc.error_class, str(exc))]
        except (OSError, ValueError) as exc:  # unreadable: vanished, permissions, over the size cap
            return [self._error_row(meta, kind, data, stage, type(exc).__name__, str(exc))]
        asset_id = storage.content_id(data)
        status = "partial" if left_out else "ok"
        rows = [
            {
                **meta,
                "asset_id": asset_id,
                "asset_modality": kind,
                "asset_status": status,
                "n_chunks": len(chunks),
                "chunk_id": storage.chunk_id(asset_id, chunk.pop("locator")),
                "error_stage": "",
                "error_class": "",
                "error_message": "",
                **chunk,
            }
            for chunk in chunks
        ]
        if left_out is not None:  # a partial result: what was indexed stays, the rest is an error
            notice = self._error_row(
                meta, kind, data, "decode", left_out.error_class, str(left_out)
            )
            rows.append({**notice, "asset_status": status, "n_chunks": len(chunks)})
        return rows

    def _error_row(
        self, meta: dict, kind: str, data: bytes, stage: str, error_class: str, message: str
    ) -> dict[str, Any]:
        asset_id = storage.content_id(data or f"{meta['uri']}|{meta['fingerprint']}".encode())
        return {
            **meta,
            "asset_id": asset_id,
            "asset_modality": kind,
            "asset_status": "failed",
            "n_chunks": 0,
            "chunk_id": storage.chunk_id(asset_id, "error"),
            "modality": kind,
            "error_stage": stage,
            "error_class": error_class,
            "error_message": message or error_class,
        }

    def _decode(self, kind: str, data: bytes) -> tuple[list[dict[str, Any]], DecodeError | None]:
        """The object's chunks, and what was left out of them when the result is partial."""
        if kind == "image":
            return [self._image_row(data)], None
        if kind in ("text", "markdown", "html"):
            from mrag.decode.text import decode_text

            decoded = decode_text(data, kind=kind)
            return self._text_rows(decoded, page=None), None
        if kind == "pdf":
            return self._pdf_rows(data)
        raise DecodeError(
            f"no decoder for this object type ({kind})", error_class="UnsupportedType"
        )

    def _image_row(self, data: bytes) -> dict[str, Any]:
        decoded = decode_image(
            data,
            image_size=self.image_size,
            max_pixels=self.ingest.max_image_pixels,
            thumbnail_px=self.ingest.thumbnail_px,
            resize_mode=self.preprocess.resize_mode,
            interpolation=self.preprocess.interpolation,
        )
        return {
            "locator": "image",
            "modality": "image",
            "pixels": decoded.pixels.tobytes(),
            "thumbnail": decoded.thumbnail_jpeg,
            "width_px": decoded.width_px,
            "height_px": decoded.height_px,
        }

    def _text_rows(self, decoded: DecodedText, *, page: int | None) -> list[dict[str, Any]]:
        """Token windows of the text; each carries its context (title, section heading), which
        is embedded and indexed with it while ``text`` and the offsets stay the page's own."""
        from mrag.chunk import chunk_text

        chunks = chunk_text(
            decoded.text,
            max_tokens=self.ingest.chunk_max_tokens,
            overlap_tokens=self.ingest.chunk_overlap_tokens,
            count_tokens=_token_counter(self.text_spec, self.text_weights),
        )
        prefix = f"page={page}|" if page is not None else ""
        return [
            {
                "locator": f"{prefix}chars={c.char_start}-{c.char_end}",
                "modality": "text",
                "page": page,
                "char_start": c.char_start,
                "char_end": c.char_end,
                "text": c.text,
                "title": decoded.title,
                "context": decoded.context_at(c.char_start),
            }
            for c in chunks
        ]

    def _pdf_rows(self, data: bytes) -> tuple[list[dict[str, Any]], DecodeError | None]:
        """A page's pixels are the whole page letterboxed on white, whatever the model's
        ``resize_mode``: a page's content reaches its edges (margins, text columns, headers), so
        a centre crop would cut whole columns out of the vector and a squash would distort the
        glyphs; white is the paper's own colour, where black bars would read as content. Photos
        (:meth:`_image_row`) keep the model's own resize, the one it was trained on."""
        from mrag.decode.image import letterbox_pixels
        from mrag.decode.pdf import decode_pdf

        decoded = decode_pdf(
            data,
            max_pages=self.ingest.pdf_max_pages,
            max_page_pixels=self.ingest.max_image_pixels,
            render_px=self.ingest.pdf_render_px,
            ocr=self.ingest.ocr,
        )
        rows: list[dict[str, Any]] = []
        for page in decoded.pages:
            pixels = letterbox_pixels(
                page.image, self.image_size, self.preprocess.interpolation, fill=(255, 255, 255)
            )
            rows.append(
                {
                    "locator": f"page={page.page}",
                    "modality": "pdf_page",
                    "page": page.page,
                    "pixels": pixels.tobytes(),
                    "thumbnail": thumbnail_jpeg(page.image, self.ingest.thumbnail_px),
                    "width_px": page.image.width,
                    "height_px": page.image.height,
                }
            )
            if page.text.strip():
                rows.extend(self._text_rows(DecodedText(page.text), page=page.page))
        left_out = None
        if decoded.omitted_pages:
            left_out = DecodeError(
                f"PDF has {decoded.total_pages} pages, over the pdf_max_pages limit of "
                f"{self.ingest.pdf_max_pages}: pages 1-{len(decoded.pages)} are indexed, pages "
                f"{len(decoded.pages) + 1}-{decoded.total_pages} are left out",
                error_class="TooManyPages",
            )
        return rows, left_out


def _scalar(value: Any) -> Any:
    """numpy scalars → Python values (pyarrow's from_pylist wants plain types)."""
    return value.item() if hasattr(value, "item") else value
