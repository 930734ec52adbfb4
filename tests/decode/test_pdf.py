from __future__ import annotations

import shutil

import pypdfium2 as pdfium
import pytest
from PIL import Image

from mrag.decode.pdf import decode_pdf, iter_pdf_pages
from mrag.errors import DecodeError
from tests.doc_media import scan_image, scanned_pdf, text_pdf

LIMITS = {"max_pages": 10, "max_page_pixels": 10_000_000, "render_px": 512}


def _require_tesseract() -> None:
    # Not a skip: CI installs tesseract-ocr (.ci/setup), and OCR is a feature users rely on.
    assert shutil.which("tesseract"), "tesseract not on PATH: apt-get install tesseract-ocr"


def test_text_layer_per_page_and_rendered_image() -> None:
    pdf = text_pdf(["Alpha page (one).", "Beta page two.", "Crème brûlée — naïve café"])
    pages = decode_pdf(pdf, **LIMITS).pages
    assert [(p.page, p.text, p.text_source) for p in pages] == [
        (1, "Alpha page (one).", "text_layer"),
        (2, "Beta page two.", "text_layer"),
        (3, "Crème brûlée — naïve café", "text_layer"),
    ]
    assert pages[0].image.size == (396, 512) and pages[0].image.mode == "RGB"
    assert (pages[0].width_pt, pages[0].height_pt) == (612, 792)
    # the render shows the page: white paper with dark type on it
    assert pages[0].image.getpixel((5, 5)) == (255, 255, 255)
    assert min(pages[0].image.convert("L").getdata()) < 100


def test_rotated_page_reports_its_displayed_size() -> None:
    (page,) = decode_pdf(text_pdf(["Landscape."], rotate=90), **LIMITS).pages
    assert (page.width_pt, page.height_pt) == (792, 612)
    assert page.image.size == (512, 396) and page.text == "Landscape."


def test_scanned_page_is_ocred() -> None:
    _require_tesseract()
    (page,) = decode_pdf(scanned_pdf(["QUARTERLY HARVEST", "REPORT"]), **LIMITS).pages
    assert page.text_source == "ocr"
    assert "QUARTERLY HARVEST" in page.text.upper() and "REPORT" in page.text.upper()


def test_small_print_is_ocred_at_scan_resolution_not_thumbnail_resolution() -> None:
    # ~8 pt type: unreadable in the 512-px render, readable in the 300-dpi OCR render.
    _require_tesseract()
    scan = scanned_pdf(["The quarterly harvest report shows", "barley yields rose."], font_px=18)
    (page,) = decode_pdf(scan, **LIMITS).pages
    assert "quarterly harvest report" in page.text.lower()
    assert "barley yields" in page.text.lower()


def test_each_page_of_a_mixed_document_gets_its_own_text_source() -> None:
    _require_tesseract()
    blank = Image.new("RGB", (620, 877), "white")
    pdf = text_pdf(["A typed cover page.", scan_image(["QUARTERLY HARVEST"]), blank])
    pages = decode_pdf(pdf, **LIMITS).pages
    assert [p.text_source for p in pages] == ["text_layer", "ocr", "none"]
    assert pages[0].text == "A typed cover page."
    assert "QUARTERLY HARVEST" in pages[1].text.upper()
    assert pages[2].text == ""


def test_ocr_can_be_switched_off() -> None:
    (page,) = decode_pdf(scanned_pdf(["QUARTERLY"]), **LIMITS, ocr=False).pages
    assert (page.text, page.text_source) == ("", "none")
    assert page.image.size == (362, 512)


def test_missing_tesseract_is_a_clear_error_only_when_ocr_is_needed(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DecodeError, match="apt-get install tesseract-ocr") as info:
        decode_pdf(scanned_pdf(["QUARTERLY"]), **LIMITS)
    assert info.value.error_class == "OCRUnavailable"
    assert decode_pdf(text_pdf(["Typed text."]), **LIMITS).pages[0].text == "Typed text."
    assert (
        decode_pdf(scanned_pdf(["QUARTERLY"]), **LIMITS, ocr=False).pages[0].text_source == "none"
    )


def test_a_password_to_open_is_encrypted_pdf_but_an_owner_password_alone_is_fine() -> None:
    locked = text_pdf(["Secret minutes."], user_password="hunter2")
    with pytest.raises(DecodeError) as info:
        decode_pdf(locked, **LIMITS)
    assert info.value.error_class == "EncryptedPDF"
    # the file is really encrypted, not broken: the password opens it
    document = pdfium.PdfDocument(locked, password="hunter2")
    assert document[0].get_textpage().get_text_bounded() == "Secret minutes."
    document.close()
    (page,) = decode_pdf(
        text_pdf(["Printable, not editable."], owner_password="boss"), **LIMITS
    ).pages
    assert (page.text, page.text_source) == ("Printable, not editable.", "text_layer")


@pytest.mark.parametrize(
    ("data", "limits", "error_class"),
    [
        (text_pdf(["x"])[:180], {}, "CorruptPDF"),  # truncated
        (b"%PDF-1.7\n" + b"\x00garbage" * 20, {}, "CorruptPDF"),
        (b"<html>not a pdf</html>", {}, "CorruptPDF"),
        (b"", {}, "EmptyObject"),
        (text_pdf(["p"], media_box=(20000, 20000)), {}, "PageTooLarge"),
        (text_pdf(["p"], media_box=(3000, 3000)), {"max_page_pixels": 4_000_000}, "PageTooLarge"),
    ],
)
def test_bad_pdfs_are_typed_errors(data: bytes, limits: dict, error_class: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_pdf(data, **{**LIMITS, **limits})
    assert info.value.error_class == error_class


def test_a_pdf_over_the_page_limit_is_cut_not_refused() -> None:
    decoded = decode_pdf(text_pdf([f"page {n}" for n in range(1, 6)]), **{**LIMITS, "max_pages": 3})
    assert [page.text for page in decoded.pages] == ["page 1", "page 2", "page 3"]
    assert (decoded.total_pages, decoded.omitted_pages) == (5, 2)
    whole = decode_pdf(text_pdf(["one", "two"]), **LIMITS)
    assert (whole.total_pages, whole.omitted_pages) == (2, 0)


def test_pages_stream_one_at_a_time_with_the_count_known_first() -> None:
    count = [0]
    pages = iter_pdf_pages(text_pdf(["one", "two"]), **LIMITS, page_count=count)
    first = next(pages)
    assert (first.page, first.text, count[0]) == (1, "one", 2)
