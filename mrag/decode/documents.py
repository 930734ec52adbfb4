"""Document decoders: plain text, Markdown, HTML and PDF → ``text`` (and ``pdf_page``) rows.

Text chunks are token windows of the document (:func:`mrag.chunk.chunk_text`) with character
offsets into its cleaned text; each carries its context (title, section heading), which is
embedded and indexed with it while ``text`` and the offsets stay the document's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO

from mrag.errors import DecodeError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from mrag.chunk import TextChunk
    from mrag.decode import DecodeContext
    from mrag.decode.text import DecodedText


def decode_plain_text(source: BinaryIO, context: DecodeContext) -> Iterator[dict[str, Any]]:
    """Plain text is chunked from the stream: memory is bounded by the window, not the file."""
    from mrag.decode.text_stream import iter_text_chunks

    ingest = context.ingest
    chunks = iter_text_chunks(
        source,
        max_tokens=ingest.chunk_max_tokens,
        overlap_tokens=ingest.chunk_overlap_tokens,
        count_tokens=context.count_tokens,
    )
    yield from _rows(chunks, None, page=None)


def decode_markdown(source: BinaryIO, context: DecodeContext) -> Iterator[dict[str, Any]]:
    from mrag.decode.text import decode_text

    yield from text_rows(decode_text(source.read(), kind="markdown"), context, page=None)


def decode_html(source: BinaryIO, context: DecodeContext) -> Iterator[dict[str, Any]]:
    from mrag.decode.text import decode_text

    yield from text_rows(decode_text(source.read(), kind="html"), context, page=None)


def text_rows(
    decoded: DecodedText, context: DecodeContext, *, page: int | None
) -> Iterator[dict[str, Any]]:
    """Token windows of a decoded document (or one PDF page's text)."""
    from mrag.chunk import chunk_text

    chunks = chunk_text(
        decoded.text,
        max_tokens=context.ingest.chunk_max_tokens,
        overlap_tokens=context.ingest.chunk_overlap_tokens,
        count_tokens=context.count_tokens,
    )
    return _rows(chunks, decoded, page=page)


def _rows(
    chunks: Iterable[TextChunk], decoded: DecodedText | None, *, page: int | None
) -> Iterator[dict[str, Any]]:
    prefix = f"page={page}|" if page is not None else ""
    for c in chunks:
        yield {
            "locator": f"{prefix}chars={c.char_start}-{c.char_end}",
            "modality": "text",
            "page": page,
            "char_start": c.char_start,
            "char_end": c.char_end,
            "text": c.text,
            "title": decoded.title if decoded else None,
            "context": decoded.context_at(c.char_start) if decoded else None,
        }


def decode_pdf_object(source: BinaryIO, context: DecodeContext) -> Iterator[dict[str, Any]]:
    """Per page, a ``pdf_page`` row and the page text's chunks.

    A page's pixels are the whole page letterboxed on white, whatever the model's
    ``resize_mode``: a page's content reaches its edges (margins, text columns, headers), so a
    centre crop would cut whole columns out of the vector and a squash would distort the
    glyphs; white is the paper's own colour, where black bars would read as content. Photos
    keep the model's own resize, the one it was trained on.
    """
    from mrag.decode.image import letterbox_pixels, thumbnail_jpeg
    from mrag.decode.pdf import decode_pdf
    from mrag.decode.text import DecodedText

    ingest = context.ingest
    decoded = decode_pdf(
        source.read(),
        max_pages=ingest.pdf_max_pages,
        max_page_pixels=ingest.max_image_pixels,
        render_px=ingest.pdf_render_px,
        ocr=ingest.ocr,
    )
    preprocess = context.preprocess
    for page in decoded.pages:
        pixels = letterbox_pixels(
            page.image, preprocess.size_px, preprocess.interpolation, fill=(255, 255, 255)
        )
        yield {
            "locator": f"page={page.page}",
            "modality": "pdf_page",
            "page": page.page,
            "pixels": pixels.tobytes(),
            "thumbnail": thumbnail_jpeg(page.image, ingest.thumbnail_px),
            "width_px": page.image.width,
            "height_px": page.image.height,
        }
        if page.text.strip():
            yield from text_rows(DecodedText(page.text), context, page=page.page)
    if decoded.omitted_pages:
        raise DecodeError(
            f"PDF has {decoded.total_pages} pages, over the pdf_max_pages limit of "
            f"{ingest.pdf_max_pages}: pages 1-{len(decoded.pages)} are indexed, pages "
            f"{len(decoded.pages) + 1}-{decoded.total_pages} are left out",
            error_class="TooManyPages",
        )
