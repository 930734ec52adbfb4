from __future__ import annotations

import pytest

from mrag.decode.text import decode_text, kind_for_extension
from mrag.errors import DecodeError


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("Crème brûlée — naïve café".encode(), "Crème brûlée — naïve café"),
        ("Crème brûlée café".encode("utf-16"), "Crème brûlée café"),
        ("\ufeffBOM then text".encode("utf-8"), "BOM then text"),
        ("Grüße aus Köln, schöne Straße und Übermut".encode("cp1252"), "Grüße aus Köln"),
    ],
)
def test_encodings_are_detected(data: bytes, expected: str) -> None:
    assert expected in decode_text(data, kind="text").text


@pytest.mark.parametrize(
    ("data", "error_class"),
    [
        (bytes(range(256)) * 8, "BinaryContent"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00\x01" * 50, "BinaryContent"),
        (b"", "EmptyObject"),
        (b"  \n\t \n", "EmptyObject"),
    ],
)
def test_binary_junk_and_empty_files_are_errors(data: bytes, error_class: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_text(data, kind="text")
    assert info.value.error_class == error_class


def test_paragraph_breaks_survive_and_spaces_collapse() -> None:
    text = decode_text(b"First   line\r\nsame para\n\n\n\nSecond\tpara", kind="text").text
    assert text == "First line\nsame para\n\nSecond para"


def test_markdown_keeps_readable_text() -> None:
    md = (
        b"# Field Guide\n\nSome **bold** and _italic_ words with `code` and a "
        b"[link text](http://example.invalid/x).\n\n![alt words](img.png)\n\n"
        b"```python\nprint(1)\n```\n"
        b"> quoted line\n\n| a | b |\n|---|---|\n| c | d |\n"
    )
    decoded = decode_text(md, kind="markdown")
    assert decoded.title == "Field Guide"
    for kept in ("Field Guide", "bold", "italic", "code", "link text", "alt words", "print(1)",
                 "quoted line"):  # fmt: skip
        assert kept in decoded.text
    for dropped in ("**", "](", "```", "http://example.invalid", "# "):
        assert dropped not in decoded.text


def test_html_is_visible_text_only() -> None:
    html = b"""<!doctype html><html><head><title>The  Title</title>
    <style>body { color: red }</style><script>var secret = "do not index";</script>
    <meta name="x" content="meta text"></head><body>
    <h1>Heading</h1><p>Fish &amp; chips &lt;3 caf&eacute;</p><!-- a comment -->
    <noscript>enable js</noscript><div>Line one<br>Line two</div></body></html>"""
    decoded = decode_text(html, kind="html")
    assert decoded.title == "The Title"
    assert "Fish & chips <3 café" in decoded.text
    assert "Line one\nLine two" in decoded.text
    for hidden in ("secret", "color", "comment", "enable js", "meta text", "The Title"):
        assert hidden not in decoded.text


def test_extension_kinds_are_case_insensitive() -> None:
    assert kind_for_extension(".TXT") == "text"
    assert kind_for_extension(".Markdown") == "markdown"
    assert kind_for_extension(".HTM") == "html"
    assert kind_for_extension(".pdf") is None
