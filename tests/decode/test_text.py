from __future__ import annotations

import random

import pytest

from mrag.decode.text import decode_text
from mrag.errors import DecodeError

# Accent-light English: charset_normalizer on its own reads this cp1252 text as cp1250 ("naďve").
OFFICE_MEMO = (
    "The committee met at the café to review the naïve résumé. “It’s fine,” she said — and left. "
    "Budgets and plans for the year were discussed without further incident. "
) * 20
RUSSIAN = "Съешь же ещё этих мягких французских булок, да выпей чаю. Это проверка кодировки. " * 20


@pytest.mark.parametrize(
    ("source", "encoding"),
    [
        ("Crème brûlée — naïve café", "utf-8"),
        ("\ufeffBOM then text", "utf-8"),
        ("Crème brûlée café", "utf-16"),  # BOM, native byte order
        ("\ufeffCrème brûlée café", "utf-16-be"),
        ("Crème brûlée café, and no BOM", "utf-16-le"),
        ("Grüße aus Köln, schöne Straße und Übermut", "cp1252"),
        ("café", "cp1252"),  # too short for statistics: read as cp1252
        ("Ça va? Über", "latin-1"),
        (OFFICE_MEMO, "cp1252"),
        (RUSSIAN, "cp1251"),  # non-Western legacy text is still detected
    ],
)
def test_encodings_are_detected(source: str, encoding: str) -> None:
    expected = " ".join(source.replace("\ufeff", "").split())
    assert decode_text(source.encode(encoding), kind="text").text == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (("Olá, mundo! " * 50 + "Olá").encode()[:-1], "Olá, mundo! " * 50 + "Ol"),  # cut in "á"
        (("Köln " * 200 + "Kö").encode()[:-1], "Köln " * 200 + "K"),
        (("Straße " * 100).encode() + b"\xff" + b"Ende", ("Straße " * 100) + "\ufffdEnde"),
    ],
)
def test_slightly_damaged_utf8_stays_utf8(data: bytes, expected: str) -> None:
    assert decode_text(data, kind="text").text == expected.strip()


@pytest.mark.parametrize(
    ("data", "error_class"),
    [
        (bytes(range(256)) * 8, "BinaryContent"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00\x01" * 50, "BinaryContent"),
        (random.Random(7).randbytes(4000).replace(b"\x00", b"\x01"), "BinaryContent"),
        (b"\x01\x02\x03hello" * 10, "BinaryContent"),
        (b"", "EmptyObject"),
        (b"  \n\t \n", "EmptyObject"),
        ("\ufeff \n ".encode(), "EmptyObject"),
    ],
)
def test_binary_junk_and_empty_files_are_errors(data: bytes, error_class: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_text(data, kind="text")
    assert info.value.error_class == error_class


def test_paragraph_breaks_survive_and_spaces_collapse() -> None:
    text = decode_text(b"First   line\r\nsame para\n\n\n\nSecond\tpara", kind="text").text
    assert text == "First line\nsame para\n\nSecond para"


def test_terminal_colour_codes_are_text_and_stripped() -> None:
    log = b"\x1b[31mERROR\x1b[0m disk full on node-7\n" * 20
    text = decode_text(log, kind="text").text
    assert text.startswith("ERROR disk full on node-7\nERROR") and "\x1b" not in text


def test_markdown_keeps_readable_text() -> None:
    md = (
        b"# Field Guide\n\nSome **bold** and _italic_ words with `a*b*c` code and a "
        b"[link text](http://example.invalid/x) and [ref link][1].\n\n![alt words](img.png)\n\n"
        b"```python\nprint(2 * 3 * 4) # __dunder__\n```\n"
        b"> quoted line\n\n| a | b |\n|---|---|\n| c | d |\n\n"
        b"* bullet one\n- [x] done task\n2. numbered\n\nsnake_case_name stays\n\n"
        b"<!-- an editor's note -->\nClaim[^1].\n\n[1]: http://example.invalid/ref\n"
        b"[^1]: The footnote text.\n"
    )
    decoded = decode_text(md, kind="markdown")
    assert decoded.title == "Field Guide"
    for kept in ("Field Guide\n\n", "bold", "italic", "a*b*c code", "link text", "ref link.",
                 "alt words", "print(2 * 3 * 4) # __dunder__", "quoted line", "a b\nc d",
                 "bullet one\ndone task\nnumbered", "snake_case_name stays", "Claim.",
                 "The footnote text."):  # fmt: skip
        assert kept in decoded.text
    for dropped in ("**", "](", "```", "http://example.invalid", "# Field", "* b", "[x]", "|",
                    "---", "editor's note", "[^1]"):  # fmt: skip
        assert dropped not in decoded.text


def test_markdown_title_from_front_matter_or_setext_heading() -> None:
    front = b'---\ntitle: "Release Notes"\ntags: [a, b]\n---\n# Version 2\n\nFixed bugs.'
    decoded = decode_text(front, kind="markdown")
    assert decoded.title == "Release Notes"
    assert decoded.text == "Version 2\n\nFixed bugs."
    setext = decode_text(b"Travel Log\n==========\n\nDay one\n-------\nRain.", kind="markdown")
    assert setext.title == "Travel Log"
    assert setext.text == "Travel Log\n\nDay one\n\nRain."


def test_html_is_visible_text_only() -> None:
    html = b"""<!doctype html><html><head><title>The  Title</title>
    <style>body { color: red }</style><script>var secret = "do not index";</script>
    <meta name="x" content="meta text"></head><body>
    <h1>Heading</h1><p>Fish &amp; chips &lt;3 caf&eacute;&nbsp;&#8212; &#x2603;</p>
    <!-- a comment -->
    <noscript>enable js</noscript><template><p>template text</p></template>
    <svg><title>icon name</title><text>svg text</text></svg>
    <div>Line one<br>Line two</div><pre>code  line 1
code line 2</pre><table><tr><td>cell a</td><td>cell b</td></tr></table></body></html>"""
    decoded = decode_text(html, kind="html")
    assert decoded.title == "The Title"
    assert "Heading\n\nFish & chips <3 café — ☃" in decoded.text
    assert "Line one\nLine two" in decoded.text
    assert "code line 1\ncode line 2" in decoded.text
    assert "cell a cell b" in decoded.text
    for hidden in ("secret", "color", "comment", "enable js", "meta text", "The Title",
                   "template text", "icon name", "svg text"):  # fmt: skip
        assert hidden not in decoded.text


@pytest.mark.parametrize(
    "html",
    [
        b"<html><head><title>T</title><body><p>Body text</p>",  # head never closed
        b"<html><head><title>T</title><p>Body text</p>",  # no <body> tag either
        b"<head><title>T</title>Body text",  # stray text ends the head
    ],
)
def test_html_without_closing_head_still_has_its_body(html: bytes) -> None:
    assert decode_text(html, kind="html") == decode_text(
        b"<title>T</title><p>Body text", kind="html"
    )
    assert decode_text(html, kind="html").text == "Body text"


def test_html_declared_charset_is_used() -> None:
    html = '<meta charset="iso-8859-1"><title>Café</title><p>Crème brûlée</p>'.encode("cp1252")
    decoded = decode_text(html, kind="html")
    assert (decoded.title, decoded.text) == ("Café", "Crème brûlée")


def test_html_mislabelled_as_utf8_is_still_read() -> None:
    html = '<meta charset="utf-8"><p>Crème brûlée, naïve café.</p>'.encode("cp1252")
    assert decode_text(html, kind="html").text == "Crème brûlée, naïve café."


def test_html_with_only_markup_is_empty() -> None:
    with pytest.raises(DecodeError) as info:
        decode_text(b"<html><head><script>x()</script></head><body> </body></html>", kind="html")
    assert info.value.error_class == "EmptyObject"


def test_unknown_kind_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="unknown text kind"):
        decode_text(b"hello", kind="docx")


SPHINX_LIKE = b"""<!doctype html><html><head><title>heapq - Heap queue algorithm</title></head>
<body>
<div class="related" role="navigation"><ul><li><a href="index.html">index</a></li>
<li>next: bisect</li></ul></div>
<div class="document"><div class="body" role="main">
<section><h1>heapq - Heap queue algorithm<a class="headerlink" href="#x">\xc2\xb6</a></h1>
<p>This module provides an implementation of the heap queue algorithm.</p>
<section><h2>Basic Examples<a class="headerlink" href="#y">\xc2\xb6</a></h2>
<p>A heapsort can be implemented by pushing all values onto a heap.</p>
<table><tr><td>heappush</td><td>push an item</td></tr></table></section></section>
</div></div>
<div class="sphinxsidebar" role="navigation"><h3>Next topic</h3>
<p>bisect - Array bisection algorithm</p><h3>This Page</h3><p>Report a Bug</p></div>
<div class="footer">Copyright 2001-2023.</div></body></html>"""


def test_html_keeps_the_main_content_and_drops_page_chrome() -> None:
    decoded = decode_text(SPHINX_LIKE, kind="html")
    assert "heap queue algorithm" in decoded.text
    assert "heappush push an item" in decoded.text  # tables are content
    for chrome in ("Next topic", "bisect", "Report a Bug", "Copyright", "index"):
        assert chrome not in decoded.text


def test_html_without_a_main_element_drops_landmark_chrome_but_keeps_article_headers() -> None:
    html = b"""<html><head><title>Blog</title></head><body>
    <header><a href="/">Site name</a> Home About</header><nav>Archive 2024 2025</nav>
    <article><header><h1>Tides explained</h1><p>by A. Writer</p></header>
    <p>The moon pulls the oceans into two bulges.</p><footer>Filed under: science</footer></article>
    <aside>Popular posts: gardening</aside><footer>Contact us</footer></body></html>"""
    text = decode_text(html, kind="html").text
    assert "Tides explained" in text and "by A. Writer" in text and "two bulges" in text
    assert "Filed under: science" in text  # the article's own footer is content
    for chrome in ("Site name", "Archive 2024", "Popular posts", "Contact us"):
        assert chrome not in text


def test_each_chunk_knows_its_title_and_section() -> None:
    decoded = decode_text(SPHINX_LIKE, kind="html")
    assert [heading for _, heading in decoded.sections] == [
        "heapq - Heap queue algorithm",
        "Basic Examples",
    ]
    examples_at = decoded.text.index("A heapsort")
    assert decoded.context_at(examples_at) == "heapq - Heap queue algorithm — Basic Examples"
    assert decoded.context_at(0) == "heapq - Heap queue algorithm"  # the title repeats the h1
    markdown = b"# Travel Log\n\nIntro.\n\n## Day one\n\nRain all day.\n\n## Day two\n\nSun."
    md = decode_text(markdown, kind="markdown")
    assert md.context_at(md.text.index("Sun.")) == "Travel Log — Day two"
    assert decode_text(b"plain words only", kind="text").context_at(0) == ""
