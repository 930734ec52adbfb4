"""PDF pages with pypdfium2: the text layer per page, and each page rendered for the CLIP space.

A page with no text layer (a scan) is OCR'd with tesseract (Debian's ``tesseract-ocr``), from a
separate grayscale render at ``ocr_dpi`` (the CLIP render is far too coarse for small type).
Limits are checked before work is done: the page count from the page tree, a page's pixel count
from its size, so a hostile PDF cannot make a worker render a gigapixel bitmap.

pdfium is not thread-safe: decode PDFs in separate processes (Ray tasks and actors are), not in
threads of one process.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mrag.decode.text import clean_text
from mrag.errors import DecodeError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from PIL import Image

_OCR_TIMEOUT_S = 120


@dataclass(frozen=True)
class PdfPage:
    page: int  # 1-based
    text: str  # "" when the page has no text layer and OCR is off or found nothing
    text_source: str  # "text_layer", "ocr" or "none"
    image: Image.Image  # RGB, longer side == render_px
    width_pt: float
    height_pt: float


@dataclass(frozen=True)
class DecodedPdf:
    """The pages that were decoded, and how many the document has (more when it was cut)."""

    pages: list[PdfPage]
    total_pages: int

    @property
    def omitted_pages(self) -> int:
        return self.total_pages - len(self.pages)


def decode_pdf(
    data: bytes,
    *,
    max_pages: int,
    max_page_pixels: int,
    render_px: int,
    ocr: bool = True,
    ocr_dpi: int = 300,
) -> DecodedPdf:
    """Decodes the first ``max_pages`` pages; any failure is a :class:`DecodeError`.

    A longer document is a partial result, not a refusal: its first ``max_pages`` pages are
    decoded and ``total_pages`` says how many were left out, for the caller to record. Holds
    every page's render in memory (about 4 MB each at ``render_px=1024``); iterate
    :func:`iter_pdf_pages` instead to hold one page at a time.
    """
    pages: list[PdfPage] = []
    total = [0]
    for page in iter_pdf_pages(
        data,
        max_pages=max_pages,
        max_page_pixels=max_page_pixels,
        render_px=render_px,
        ocr=ocr,
        ocr_dpi=ocr_dpi,
        page_count=total,
    ):
        pages.append(page)
    return DecodedPdf(pages, total[0])


def iter_pdf_pages(
    data: bytes,
    *,
    max_pages: int,
    max_page_pixels: int,
    render_px: int,
    ocr: bool = True,
    ocr_dpi: int = 300,
    page_count: list[int] | None = None,
) -> Iterator[PdfPage]:
    """Yields the first ``max_pages`` pages one at a time; document checks run before the first.

    Args:
        data: the whole PDF.
        max_pages: pages after this many are not decoded (the document is cut, not refused).
        max_page_pixels: a page whose size at 72 dpi (1 px per point) is over this is refused
            (``PageTooLarge``); the OCR render is also kept under it.
        render_px: the longer side of each page's rendered ``image``, in pixels.
        ocr: OCR pages that have no text layer (needs the ``tesseract`` binary).
        ocr_dpi: the resolution pages are rendered at for OCR.
        page_count: if given, its first item is set to the document's page count before the
            first page is yielded.

    Raises:
        DecodeError: ``EmptyObject``, ``CorruptPDF``, ``EncryptedPDF`` (a password is needed to
            open it; permissions-only encryption is fine), ``PageTooLarge``, ``OCRUnavailable``,
            ``OCRFailed``, ``OCRTimeout``.
    """
    import pypdfium2 as pdfium

    if not data:
        raise DecodeError("object is empty (0 bytes)", error_class="EmptyObject")
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        message = str(exc)
        if "password" in message.lower() or "security" in message.lower():
            raise DecodeError(
                f"encrypted PDF (a password is needed to open it): {message}",
                error_class="EncryptedPDF",
            ) from None
        raise DecodeError(f"PDF cannot be opened: {message}", error_class="CorruptPDF") from None
    try:
        n_pages = len(document)
        if n_pages == 0:
            raise DecodeError("PDF has no pages", error_class="EmptyObject")
        if page_count is not None:
            page_count[0] = n_pages
        for index in range(min(n_pages, max_pages)):
            page = document[index]
            try:
                yield _decode_page(page, index + 1, max_page_pixels, render_px, ocr, ocr_dpi)
            finally:
                page.close()
    except pdfium.PdfiumError as exc:
        raise DecodeError(f"PDF page cannot be read: {exc}", error_class="CorruptPDF") from None
    finally:
        document.close()


def _decode_page(
    page, number: int, max_page_pixels: int, render_px: int, ocr: bool, ocr_dpi: int
) -> PdfPage:
    width_pt, height_pt = page.get_size()  # as displayed: /Rotate swaps them
    if not (width_pt > 0 and height_pt > 0 and math.isfinite(width_pt * height_pt)):
        raise DecodeError(f"page {number} has no usable size", error_class="CorruptPDF")
    # At 72 dpi a point is a pixel: a page declaring more than the pixel limit is refused even
    # though we render it smaller, as Pillow's limit refuses an oversized image header.
    if width_pt * height_pt > max_page_pixels:
        raise DecodeError(
            f"page {number} is {width_pt:.0f}x{height_pt:.0f} pt = {width_pt * height_pt:.0f} "
            f"pixels at 72 dpi, over the pixel limit of {max_page_pixels}",
            error_class="PageTooLarge",
        )
    textpage = page.get_textpage()
    try:
        # Bounded (to the page box) rather than get_text_range: full Unicode, not UCS-2 only.
        text = clean_text(textpage.get_text_bounded())
    finally:
        textpage.close()
    image = page.render(scale=render_px / max(width_pt, height_pt)).to_pil().convert("RGB")
    source = "text_layer" if text else "none"
    if not text and ocr:
        scale = min(ocr_dpi / 72, math.sqrt(max_page_pixels / (width_pt * height_pt)))
        scan = page.render(scale=scale, grayscale=True).to_pil()
        text = clean_text(ocr_image(scan))
        source = "ocr" if text else "none"
    return PdfPage(number, text, source, image, width_pt, height_pt)


def ocr_image(image: Image.Image, *, lang: str = "eng") -> str:
    """Runs the tesseract binary on an image; an absent binary is a clear, typed error.

    Tesseract gets one thread (``OMP_THREAD_LIMIT=1``): workers already run one task per core,
    and OpenMP threads on top of that slow OCR down.
    """
    import io

    binary = shutil.which("tesseract")
    if binary is None:
        raise DecodeError(
            "OCR needs tesseract: apt-get install tesseract-ocr", error_class="OCRUnavailable"
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PPM" if image.mode in ("L", "RGB") else "PNG")
    try:
        result = subprocess.run(
            [binary, "stdin", "stdout", "-l", lang, "--psm", "3"],
            input=buffer.getvalue(),
            capture_output=True,
            timeout=_OCR_TIMEOUT_S,
            check=True,
            env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        )
    except subprocess.TimeoutExpired:
        raise DecodeError(
            f"OCR took over {_OCR_TIMEOUT_S} s on one page", error_class="OCRTimeout"
        ) from None
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.decode(errors="replace").strip()[-300:]
        raise DecodeError(f"OCR failed: {detail}", error_class="OCRFailed") from None
    return result.stdout.decode(errors="replace").strip()
