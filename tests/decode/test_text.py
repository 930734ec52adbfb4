from __future__ import annotations

import io
import random
import tracemalloc

import pytest

from mrag.chunk import chunk_text
from mrag.decode.text import clean_text, decode_text, iter_text_chunks
from mrag.decode.text_stream import TextCleaner
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


# ------------------------------------------------------------------- Markdown, as CommonMark


@pytest.mark.parametrize(
    ("markdown", "text", "sections"),
    [
        (  # setext headings, one over two lines: whole headings, sections and title
            b"Field Guide\nto Birds\n===\n\nIntro.\n\nPart two\n--------\nBody.",
            "Field Guide to Birds\n\nIntro.\n\nPart two\n\nBody.",
            ["Field Guide to Birds", "Part two"],
        ),
        (  # a dash line under a list is a thematic break, not a setext heading
            b"Intro\n- item\n---\nAfter",
            "Intro\nitem\n\nAfter",
            [],
        ),
        (  # nested lists: one item per line, markers gone
            b"- one\n  - one a\n    1. deep *em*\n       continued\n- two\n",
            "one\none a\ndeep em\ncontinued\ntwo",
            [],
        ),
        (  # code spans holding backticks keep them
            b"Use `` `tick` `` and ``a ` b`` here.",
            "Use `tick` and a ` b here.",
            [],
        ),
        (  # indented code is verbatim: no heading, no emphasis
            b"Intro.\n\n    # not a heading\n    x = *y*\n\nAfter.",
            "Intro.\n\n# not a heading\nx = *y*\n\nAfter.",
            [],
        ),
        (  # link reference definitions over several lines leave no trace
            b'See [the docs][d] and [More].\n\n[d]: http://example.invalid/docs\n  "A title"\n'
            b"[more]:\n  <http://example.invalid/more>\n",
            "See the docs and More.",
            [],
        ),
        (  # underscores inside words are not emphasis
            b"snake_case_name, a__b__c and _emph_ or __strong__",
            "snake_case_name, a__b__c and emph or strong",
            [],
        ),
        (  # a # in fenced or quoted code is code, not a heading
            b"# Top\n\n```sh\n# comment\n```\n\n> ```\n> # quoted code\n> ```\n\nText.",
            "Top\n\n# comment\n\n# quoted code\n\nText.",
            ["Top"],
        ),
        (  # escapes, entities and hard breaks are read as CommonMark reads them
            b"\\# not a heading, \\[not a link\\](x) &copy; &#x41;\\\nnext",
            "# not a heading, [not a link](x) © A\nnext",
            [],
        ),
        (  # an HTML block shows its visible text only
            b"<div align=center>\n  <b>Bold</b> &amp; shown\n</div>\n\n<script>\nvar x = 1;\n"
            b"</script>\n\nAfter <span>inline</span> tags.",
            "Bold & shown\n\nAfter inline tags.",
            [],
        ),
    ],
)
def test_markdown_is_read_as_commonmark(markdown: bytes, text: str, sections: list[str]) -> None:
    decoded = decode_text(markdown, kind="markdown")
    assert decoded.text == text
    assert [heading for _, heading in decoded.sections] == sections
    for offset, heading in decoded.sections:
        assert decoded.text[offset:].startswith(heading)


def test_markdown_headings_in_quotes_are_not_the_title() -> None:
    decoded = decode_text(b"> # Someone else's heading\n\nOur text.\n\n# Ours", kind="markdown")
    assert decoded.title == "Ours"
    assert [heading for _, heading in decoded.sections] == ["Ours"]


# ---------------------------------------------------------------- plain text from a stream


def _prose(rng: random.Random, n_chars: int) -> str:
    words = ["bees", "dance", "hive", "wax", "Honey", "pollen", "e.g.", "(note)", "—", "3.14"]
    paragraphs, size = [], 0
    while size < n_chars:
        sentences = [
            " ".join(rng.choices(words, k=rng.randint(3, 30))).capitalize() + rng.choice(".!?")
            for _ in range(rng.randint(1, 6))
        ]
        paragraphs.append(rng.choice([" ", "  ", "\r\n"]).join(sentences))
        size += len(paragraphs[-1])
    return rng.choice(["\n\n", "\r\n\r\n", "\n \n\n"]).join(paragraphs)


def _stream_texts() -> dict[str, bytes]:
    rng = random.Random(5)
    hex_blob = "".join(rng.choices("0123456789abcdef", k=150_000))
    cjk = "".join(
        rng.choice(["今天我们在图书馆里读书。", "火山和地震", "「很好」！", "\u3000"])
        for _ in range(12_000)
    )
    accented = _prose(rng, 150_000).replace("hive", "café").replace("wax", "naïve")
    return {
        "paragraphs": _prose(rng, 200_000).encode(),
        "one line with spaces": " ".join(rng.choices(["word", "x" * 30, "é"], k=40_000)).encode(),
        "one line without spaces": hex_blob.encode(),
        "cjk": cjk.encode(),
        "utf-16 with bom": _prose(rng, 100_000).encode("utf-16"),
        "cp1252": accented.encode("cp1252"),
        "ascii, then cp1252": (_prose(rng, 100_000).replace("—", "-") + accented).encode("cp1252"),
    }


@pytest.mark.parametrize("name", list(_stream_texts()))
def test_streamed_chunks_are_those_of_the_whole_text(name: str) -> None:
    data = _stream_texts()[name]
    whole = decode_text(data, kind="text").text
    chunks = list(
        iter_text_chunks(io.BytesIO(data), max_tokens=50, overlap_tokens=10, window_chars=4096)
    )
    assert chunks == chunk_text(whole, max_tokens=50, overlap_tokens=10)
    covered = bytearray(len(whole))
    for chunk in chunks:
        assert whole[chunk.char_start : chunk.char_end] == chunk.text
        covered[chunk.char_start : chunk.char_end] = b"\x01" * len(chunk.text)
    assert all(hit or char.isspace() for char, hit in zip(whole, covered, strict=True))


def test_a_small_file_streams_as_it_decodes_whole() -> None:
    data = OFFICE_MEMO.encode("cp1252")  # under one window: the whole-file detection
    chunks = list(iter_text_chunks(io.BytesIO(data), max_tokens=40, overlap_tokens=5))
    text = decode_text(data, kind="text").text
    assert chunks == chunk_text(text, max_tokens=40, overlap_tokens=5)
    assert "naïve résumé" in chunks[0].text


@pytest.mark.parametrize(
    "data",
    [
        random.Random(7).randbytes(200_000).replace(b"\x00", b"\x01"),
        b"ok text " * 2000 + bytes(range(256)) * 800,  # binary after 16 kB of text
        b"\x01\x02\x03hello" * 20_000,
    ],
)
def test_streamed_binary_junk_is_an_error_at_the_first_window(data: bytes) -> None:
    chunks = iter_text_chunks(io.BytesIO(data), max_tokens=50, overlap_tokens=0)
    with pytest.raises(DecodeError) as info:
        next(chunks)
    assert info.value.error_class == "BinaryContent"


@pytest.mark.parametrize("data", [b"", b"  \n\t \n" * 30_000, "\ufeff \n ".encode("utf-16")])
def test_a_blank_stream_has_no_chunks(data: bytes) -> None:
    assert list(iter_text_chunks(io.BytesIO(data), max_tokens=50, overlap_tokens=0)) == []


def test_bad_stream_settings_fail_at_the_call() -> None:
    with pytest.raises(ValueError, match="overlap_tokens"):
        iter_text_chunks(io.BytesIO(b"text"), max_tokens=10, overlap_tokens=10)
    with pytest.raises(ValueError, match="window_chars"):
        iter_text_chunks(io.BytesIO(b"text"), max_tokens=10, overlap_tokens=0, window_chars=0)


@pytest.mark.parametrize("spaced", [True, False], ids=["with spaces", "without spaces"])
def test_streaming_a_huge_line_holds_a_few_windows(spaced: bool) -> None:
    """Whole, a 40 MB line cost 0.45 GiB to clean, as much again to count approximately and
    2.4-6.1 GiB to count with the MiniLM tokenizer; streamed, a few windows."""
    rng = random.Random(1)
    words = ["".join(rng.choices("abcdefghij", k=rng.randint(20, 60))) for _ in range(500)]
    line = (" " if spaced else "").join(rng.choices(words, k=600_000))[: 20 << 20]
    source, text_end = io.BytesIO(line.encode()), len(line.rstrip())
    del line
    window = 1 << 20
    tracemalloc.start()
    try:
        n_chunks = 0
        for chunk in iter_text_chunks(
            source, max_tokens=200, overlap_tokens=40, window_chars=window
        ):
            n_chunks += 1
            last = chunk
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert last.char_end == text_end
    assert n_chunks > 10_000
    assert peak < 16 * window, f"peak {peak / window:.1f} windows"  # 8.5 and 6.2 measured


def test_clean_text_is_the_same_cut_anywhere() -> None:
    rng = random.Random(3)
    alphabet = ["a", "e", "\u0301", "\u0327", "\u0bc6", "\u0bbe", "\u1100", "\u1161", " ", "\t",
                "\n", "\r", "\r\n", "\xa0", "\u2028", "\ufeff", "\x01", "\x0c", "\x1b[31m",
                "\x1b[1 q", "\x1b", "[", "m", "火", "\u0f73", "word"]  # fmt: skip
    for _ in range(300):
        text = "".join(rng.choices(alphabet, k=rng.randint(0, 300)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 40))))
        cleaner = TextCleaner()
        pieces = [
            cleaner.clean(text[a:b]) for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)
        ]
        assert "".join(pieces) + cleaner.clean("", final=True) == clean_text(text)
    assert clean_text("\ufeffe\u0301\x1b[1m\r\n\r\n  x\u00a0\x0cy\r") == "é\n\nx y"
