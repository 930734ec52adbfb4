from __future__ import annotations

import shutil

import pytest

from mrag.decode.pdf import decode_pdf
from mrag.errors import DecodeError
from tests.doc_media import scanned_pdf, text_pdf

LIMITS = {"max_pages": 10, "max_page_pixels": 10_000_000, "render_px": 512}


def test_text_layer_per_page_and_rendered_image() -> None:
    pages = decode_pdf(text_pdf(["Alpha page (one).", "Beta page two."]), **LIMITS)
    assert [(p.page, p.text, p.text_source) for p in pages] == [
        (1, "Alpha page (one).", "text_layer"),
        (2, "Beta page two.", "text_layer"),
    ]
    assert max(pages[0].image.size) == 512 and pages[0].image.mode == "RGB"
    assert (pages[0].width_pt, pages[0].height_pt) == (612, 792)


def test_scanned_page_is_ocred() -> None:
    assert shutil.which("tesseract"), "tesseract-ocr missing: run bash .ci/setup"
    pages = decode_pdf(scanned_pdf(["QUARTERLY HARVEST", "REPORT"]), **LIMITS)
    assert pages[0].text_source == "ocr"
    assert "QUARTERLY HARVEST" in pages[0].text.upper()


def test_ocr_can_be_switched_off() -> None:
    pages = decode_pdf(scanned_pdf(["QUARTERLY"]), **LIMITS, ocr=False)
    assert (pages[0].text, pages[0].text_source) == ("", "none")


@pytest.mark.parametrize(
    ("data", "limits", "error_class"),
    [
        (text_pdf(["x"], encrypted=True), {}, "EncryptedPDF"),
        (text_pdf(["x"])[:180], {}, "CorruptPDF"),
        (b"%PDF-1.7\n" + b"\x00garbage" * 20, {}, "CorruptPDF"),
        (b"", {}, "EmptyObject"),
        (text_pdf(["p"] * 4), {"max_pages": 3}, "TooManyPages"),
        (text_pdf(["p"], media_box=(20000, 20000)), {}, "PageTooLarge"),
    ],
)
def test_bad_pdfs_are_typed_errors(data: bytes, limits: dict, error_class: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_pdf(data, **{**LIMITS, **limits})
    assert info.value.error_class == error_class
