"""PDF pages with pypdfium2: the text layer per page, and each page rendered for the CLIP space.

A page with no text layer (a scan) is OCR'd with tesseract (Debian's ``tesseract-ocr``). Limits
are checked before work is done: page count from the document header, pixel count from the page
size, so a hostile PDF cannot make a worker render a gigapixel bitmap.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mrag.errors import DecodeError

if TYPE_CHECKING:
    from PIL import Image

_OCR_TIMEOUT_S = 120


@dataclass(frozen=True)
class PdfPage:
    page: int  # 1-based
    text: str
    text_source: str  # "text_layer", "ocr" or "none"
    image: Image.Image  # RGB, longer side <= render_px
    width_pt: float
    height_pt: float


def decode_pdf(
    data: bytes, *, max_pages: int, max_page_pixels: int, render_px: int, ocr: bool = True
) -> list[PdfPage]:
    """Decodes every page; any failure is a :class:`DecodeError` for the whole document."""
    import pypdfium2 as pdfium

    if not data:
        raise DecodeError("object is empty (0 bytes)", error_class="EmptyObject")
    try:
        document = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        message = str(exc)
        if "password" in message.lower() or "security" in message.lower():
            raise DecodeError(f"encrypted PDF: {message}", error_class="EncryptedPDF") from None
        raise DecodeError(f"PDF cannot be opened: {message}", error_class="CorruptPDF") from None
    try:
        n_pages = len(document)
        if n_pages == 0:
            raise DecodeError("PDF has no pages", error_class="EmptyObject")
        if n_pages > max_pages:
            raise DecodeError(
                f"PDF has {n_pages} pages, over the pdf_max_pages limit of {max_pages}",
                error_class="TooManyPages",
            )
        return [
            _decode_page(document[i], i + 1, max_page_pixels, render_px, ocr)
            for i in range(n_pages)
        ]
    except pdfium.PdfiumError as exc:
        raise DecodeError(f"PDF page cannot be read: {exc}", error_class="CorruptPDF") from None
    finally:
        document.close()


def _decode_page(page, number: int, max_page_pixels: int, render_px: int, ocr: bool) -> PdfPage:
    width_pt, height_pt = page.get_size()
    if width_pt <= 0 or height_pt <= 0:
        raise DecodeError(f"page {number} has no size", error_class="CorruptPDF")
    # At 72 dpi a point is a pixel: a page declaring more than the pixel limit is refused even
    # though we render it smaller, as Pillow's limit refuses an oversized image header.
    if width_pt * height_pt > max_page_pixels:
        raise DecodeError(
            f"page {number} is {width_pt:.0f}x{height_pt:.0f} pt = {width_pt * height_pt:.0f} "
            f"pixels at 72 dpi, over the pixel limit of {max_page_pixels}",
            error_class="PageTooLarge",
        )
    scale = render_px / max(width_pt, height_pt)
    textpage = page.get_textpage()
    try:
        text = textpage.get_text_bounded() or ""
    finally:
        textpage.close()
    text = text.replace("\r\n", "\n").replace("\x00", "").strip()
    image = page.render(scale=scale).to_pil().convert("RGB")
    source = "text_layer" if text else "none"
    if not text and ocr:
        text = ocr_image(image)
        source = "ocr" if text else "none"
    return PdfPage(number, text, source, image, width_pt, height_pt)


def ocr_image(image: Image.Image) -> str:
    """Runs the tesseract binary on an image; an absent binary is a clear, typed error."""
    import io

    binary = shutil.which("tesseract")
    if binary is None:
        raise DecodeError(
            "OCR needs tesseract: apt-get install tesseract-ocr", error_class="OCRUnavailable"
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    try:
        result = subprocess.run(
            [binary, "stdin", "stdout", "--psm", "3"],
            input=buffer.getvalue(),
            capture_output=True,
            timeout=_OCR_TIMEOUT_S,
            check=True,
        )
    except subprocess.TimeoutExpired:
        raise DecodeError("OCR timed out", error_class="OCRTimeout") from None
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.decode(errors="replace").strip()[-300:]
        raise DecodeError(f"OCR failed: {detail}", error_class="OCRFailed") from None
    return result.stdout.decode(errors="replace").strip()
