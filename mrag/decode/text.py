"""Text documents: plain text (encoding detection), Markdown and HTML (visible text only).

Output text keeps paragraph breaks (blank lines) so the chunker can prefer them, and collapses
other white space. Binary junk with a text extension is a ``BinaryContent`` error, not a chunk.

Encoding detection, in order: a byte-order mark; UTF-16 without a BOM (NUL bytes in every other
position); UTF-8 (also when a few bytes are damaged, e.g. a file cut mid-character); for HTML, the
charset its ``<meta>`` tag declares; then ``charset_normalizer``, with ties and guesses made on
too little evidence resolved towards cp1252, the commonest legacy encoding of Western text
(``charset_normalizer`` alone reads short or accent-light cp1252 text as cp1250, Big5 or UTF-16).
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from dataclasses import dataclass

from mrag.errors import DecodeError

_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
# Control characters that do not occur in text (tab, newlines, form feed and ESC are allowed:
# ESC starts the colour codes of terminal logs, which are stripped from the output).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
# What clean_text removes: those, plus form feeds (PDF page breaks) and Unicode non-characters.
_STRIPPED = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_SAMPLE_BYTES = 8192
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_MAX_BINARY_RATIO = 0.05
# UTF-16/32 "detected" in bytes with no NULs is a misreading of 8-bit text.
_WIDE_ENCODINGS = ["utf_16", "utf_16_be", "utf_16_le", "utf_32", "utf_32_be", "utf_32_le", "utf_7"]
# Non-letters that cp1252 text commonly holds: typographic quotes, dashes, currency, degrees…
_LATIN_PUNCTUATION = set("\u00a0¡¢£¥§©«®°±²³´µ¶·¹º»¼½¾¿×÷–—‘’‚“”„†‡•…‰‹›€™")
_ASCII_BYTES = bytes(range(0x80))
_NOT_ASCII_LETTERS = bytes(b for b in range(0x100) if not (65 <= b <= 90 or 97 <= b <= 122))
_CP1252_LETTERS = bytes(
    b for b in range(0x80, 0x100) if bytes([b]).decode("cp1252", errors="replace").isalpha()
)
_CP1252_MARKS = bytes(
    b for b in range(0x80, 0x100) if bytes([b]).decode("cp1252", "replace") in _LATIN_PUNCTUATION
)


@dataclass(frozen=True)
class DecodedText:
    text: str  # single spaces, "\n" line breaks, "\n\n" paragraph breaks; never blank
    title: str | None = None
    # (char offset in ``text``, heading) for every section heading found, in order: the context
    # each chunk is embedded and indexed with (see :func:`section_at`).
    sections: tuple[tuple[int, str], ...] = ()

    def context_at(self, char_start: int) -> str:
        """``title — section`` for a chunk starting at ``char_start`` ("" when neither is known)."""
        section = section_at(self.sections, char_start)
        parts = [p for p in (self.title, section) if p]
        if len(parts) == 2 and parts[0].startswith(parts[1]):
            parts = parts[:1]  # the page's first heading, which its title repeats
        elif len(parts) == 2 and parts[1].startswith(parts[0]):
            parts = parts[1:]
        return " — ".join(parts)


def section_at(sections: tuple[tuple[int, str], ...], char_start: int) -> str | None:
    """The heading of the section that ``char_start`` falls in: the last one at or before it."""
    found = None
    for offset, heading in sections:
        if offset > char_start:
            break
        found = heading
    return found


def locate_sections(text: str, headings: list[str]) -> tuple[tuple[int, str], ...]:
    """Finds each heading, in order, as the start of a line of ``text``; unfound ones are skipped.

    Decoders know their headings from the markup; this maps them onto the cleaned text, so the
    offsets are those the chunker's ``char_start`` uses.
    """
    located: list[tuple[int, str]] = []
    cursor = 0
    for heading in headings:
        heading = " ".join(heading.split())
        if not heading:
            continue
        at = text.find(heading, cursor)
        while at > 0 and text[at - 1] != "\n":
            at = text.find(heading, at + 1)
        if at >= 0:
            located.append((at, heading))
            cursor = at + len(heading)
    return tuple(located)


def decode_text(data: bytes, *, kind: str) -> DecodedText:
    """Bytes of a ``text``, ``markdown`` or ``html`` document → its searchable text.

    Raises:
        DecodeError: ``EmptyObject`` (no bytes, or no visible text), ``BinaryContent`` (NUL
            bytes, control characters, or bytes no text encoding fits).
        ValueError: ``kind`` is not one of the three above (a bug in the caller).
    """
    if kind not in ("text", "markdown", "html"):
        raise ValueError(f"unknown text kind {kind!r}: expected 'text', 'markdown' or 'html'")
    raw = bytes_to_str(data, declared=_declared_charset(data) if kind == "html" else None)
    if kind == "html":
        decoded = _html_to_text(raw)
    elif kind == "markdown":
        body, title, headings = _markdown_to_text(raw)
        text = clean_text(body)
        decoded = DecodedText(text, title, locate_sections(text, headings))
    else:
        decoded = DecodedText(clean_text(raw))
    if not decoded.text:
        raise DecodeError("document has no visible text", error_class="EmptyObject")
    return decoded


def bytes_to_str(data: bytes, *, declared: str | None = None) -> str:
    """Decodes text of unknown encoding; refuses binary content (see the module docstring).

    Args:
        data: the whole object.
        declared: an encoding the document names for itself (an HTML ``<meta charset>``),
            tried after UTF-8 and before guessing.
    """
    if not data.strip():
        raise DecodeError("object is empty or only white space", error_class="EmptyObject")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _check_textual(data.decode(encoding, errors="replace"))
    if b"\x00" in data[:_SAMPLE_BYTES]:
        wide = _bomless_utf16(data)
        if wide is None:
            raise DecodeError(
                "binary content (NUL bytes) in a text document", error_class="BinaryContent"
            )
        return _check_textual(data.decode(wide, errors="replace"))
    text = _utf8(data)
    if text is not None:
        return _check_textual(text)
    if declared is not None:
        return _check_textual(data.decode(declared, errors="replace"))
    return _check_textual(_guess_8bit(data))


def _bomless_utf16(data: bytes) -> str | None:
    """``utf-16-le``/``-be`` when NULs sit in every other byte (mostly-ASCII UTF-16), else None."""
    sample = data[: _SAMPLE_BYTES - _SAMPLE_BYTES % 2]
    half = len(sample) // 2
    if half < 2:
        return None
    even_nuls, odd_nuls = sample[0::2].count(0), sample[1::2].count(0)
    if odd_nuls > 0.3 * half and even_nuls < 0.05 * half:
        return "utf-16-le"
    if even_nuls > 0.3 * half and odd_nuls < 0.05 * half:
        return "utf-16-be"
    return None


def _utf8(data: bytes) -> str | None:
    """The text if ``data`` is UTF-8: exactly, cut mid-character, or with a few damaged bytes
    among many valid multi-byte characters (legacy 8-bit text has no valid ones to speak of)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:  # a file cut in the middle of a multi-byte character (not cp1252 ending in "é")
        head = codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
        if _NON_ASCII.search(head):
            return head
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    damaged = text.count("\ufffd")
    valid_multibyte = len(text) - len(text.encode("ascii", errors="ignore")) - damaged
    return text if valid_multibyte >= 10 * damaged else None


def _guess_8bit(data: bytes) -> str:
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data, cp_exclusion=_WIDE_ENCODINGS))
    western = _cp1252_if_latin(data)
    if not matches:
        if western is None:
            raise DecodeError("no text encoding fits these bytes", error_class="BinaryContent")
        return western
    best = matches[0]
    tied = [m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    if western is not None and (
        best.coherence == 0.0  # no language evidence: a short or accent-light sample
        or any("cp1252" in m.could_be_from_charset for m in tied)
    ):
        return western
    return str(best)


def _cp1252_if_latin(data: bytes) -> str | None:
    """The cp1252 reading of ``data`` if it looks like Western European text: every non-ASCII
    character a letter or common typographic mark, and few enough of them (an accent here and
    there, not whole words as Cyrillic or Greek read through the wrong code page would be)."""
    high = data.translate(None, _ASCII_BYTES)  # byte-level work: fast on big files
    if high.translate(None, _CP1252_LETTERS + _CP1252_MARKS):
        return None  # an undefined byte, a control character or an unlikely symbol
    non_ascii_letters = len(high.translate(None, _CP1252_MARKS))
    ascii_letters = len(data.translate(None, _NOT_ASCII_LETTERS))
    return data.decode("cp1252") if non_ascii_letters * 2 <= ascii_letters else None


def _check_textual(text: str) -> str:
    sample = text[:20000]
    bad = len(_CONTROL.findall(sample)) + sample.count("\ufffd")
    if sample and bad / len(sample) > _MAX_BINARY_RATIO:
        raise DecodeError(
            f"binary content: {bad} control or undecodable characters in the first {len(sample)}",
            error_class="BinaryContent",
        )
    return text


def clean_text(text: str) -> str:
    """The one text clean-up for every source (documents, PDF text layers, OCR, later
    transcripts): NFC, no control or non-characters, runs of spaces collapsed, single newlines
    and paragraph breaks (one blank line) kept; "" when only blanks remain."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    if "\x1b" in text:
        text = _ANSI_ESCAPE.sub("", text)
    text = _STRIPPED.sub("", unicodedata.normalize("NFC", text))
    lines: list[str] = []
    for line in text.split("\n"):  # str methods, not regexes: several times faster on big files
        line = " ".join(line.split())  # every Unicode space, tab or NBSP run → one space
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip()


# ---------------------------------------------------------------------------------- Markdown

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_ATX_HEADING = re.compile(r"^\s{0,3}(#{1,6})(?:\s+|$)(.*?)(?:\s+#+)?\s*$")
_SETEXT_UNDERLINE = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_THEMATIC_BREAK = re.compile(r"^\s{0,3}([-*_])(?:\s*\1){2,}\s*$")
_TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$")
_LINK_DEFINITION = re.compile(r"^\s{0,3}\[(?!\^)[^\]]+\]:\s*\S+.*$")  # not footnotes
_BLOCK_QUOTE = re.compile(r"^\s{0,3}(?:>\s?)+")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+(?:\[[ xX]\]\s+)?")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_INLINE_RULES = [
    (re.compile(r"!\[([^\]]*)\](?:\([^)]*\)|\[[^\]]*\])"), r"\1"),  # images → alt text
    (re.compile(r"\[([^\]]+)\](?:\([^)]*\)|\[[^\]]*\])"), r"\1"),  # links → link text
    (re.compile(r"\[\^[^\]]+\](?::\s*)?"), ""),  # footnote markers (their text stays)
    (re.compile(r"<((?:https?|ftp|mailto):[^>\s]+)>"), r"\1"),  # autolinks → the address
    (re.compile(r"</?[A-Za-z][^>\n]*>"), ""),  # inline HTML tags
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),  # bold
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),  # *italic*
    (re.compile(r"(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])"), r"\1"),  # _italic_
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~"), r"\1"),  # strikethrough
    (re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])"), r"\1"),  # backslash escapes
]


def _markdown_to_text(markdown: str) -> tuple[str, str | None, list[str]]:
    """Markdown → readable text, a title (front matter ``title:``, else the first level-1
    heading) and the headings in order. Markup goes; headings, list items, link text, image alt
    text and the contents of code blocks and code spans stay, as text."""
    markdown = markdown.replace("\r\n", "\n").replace("\r", "\n")
    title = None
    front = _FRONT_MATTER.match(markdown)
    if front:
        found = re.search(r"^title:\s*(.+?)\s*$", front.group(1), re.M)
        title = found.group(1).strip("\"'") if found else None
        markdown = markdown[front.end() :]
    markdown = re.sub(r"<!--.*?-->", "", markdown, flags=re.S)
    out: list[str] = []
    headings: list[str] = []
    fence: str | None = None
    for line in markdown.split("\n"):
        opener = _FENCE.match(line)
        if fence is not None:  # inside a code block: the code is text, markup and all
            if opener and opener.group(1)[0] == fence[0] and len(opener.group(1)) >= len(fence):
                fence = None
                out.append("")
            else:
                out.append(line)
            continue
        if opener:
            fence = opener.group(1)
            out.append("")
            continue
        heading = _ATX_HEADING.match(line)
        if heading:
            text = _inline(heading.group(2))
            if title is None and len(heading.group(1)) == 1 and text:
                title = text
            headings.append(text)
            out.extend(["", text, ""])
            continue
        if out and out[-1].strip() and _SETEXT_UNDERLINE.match(line):
            if title is None and line.strip().startswith("="):
                title = out[-1].strip()
            headings.append(out[-1].strip())
            out.append("")
            continue
        if "-" in line and _TABLE_DELIMITER.match(line) and not _THEMATIC_BREAK.match(line):
            continue  # a table's header/body delimiter row
        if _THEMATIC_BREAK.match(line) or _LINK_DEFINITION.match(line):
            out.append("")
            continue
        line = _LIST_MARKER.sub("", _BLOCK_QUOTE.sub("", line))
        out.append(_inline(line))
    return "\n".join(out), title, headings


def _inline(line: str) -> str:
    """Inline markup out of one line; code spans keep their contents verbatim."""
    pieces, cursor = [], 0
    for span in _CODE_SPAN.finditer(line):
        pieces.append(_inline_markup(line[cursor : span.start()]))
        pieces.append(span.group(2).strip())
        cursor = span.end()
    pieces.append(_inline_markup(line[cursor:]))
    return "".join(pieces)


def _inline_markup(text: str) -> str:
    for pattern, replacement in _INLINE_RULES:
        text = pattern.sub(replacement, text)
    if "|" in text:  # table rows: cells separated by spaces
        text = " ".join(cell.strip() for cell in text.strip().strip("|").split("|"))
    return text


# -------------------------------------------------------------------------------------- HTML

_DECLARED_CHARSET = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)"""
    rb"""|<\?xml[^>]+encoding\s*=\s*["']([A-Za-z0-9_.:-]+)""",
    re.I,
)
# WHATWG: browsers read these labels as windows-1252, and so do the pages' authors.
_WINDOWS_1252_LABELS = {"iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "ascii", "us-ascii"}


def _declared_charset(data: bytes) -> str | None:
    """The 8-bit charset an HTML page declares, if any. A declared UTF-8 (already tried, so
    wrong if we get here) or UTF-16 (we would have seen its NULs) is a mislabel: guess instead."""
    found = _DECLARED_CHARSET.search(data[:4096])
    if not found:
        return None
    label = (found.group(1) or found.group(2)).decode("ascii").lower()
    label = "cp1252" if label in _WINDOWS_1252_LABELS else label
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    return None if name.startswith(("utf-8", "utf-16", "utf-32", "utf-7")) else name


# Page chrome, by the markup sites use for it: landmarks and the class names of the common
# documentation generators (Sphinx: sphinxsidebar, related; DocBook: navheader, navfooter, toc).
_CHROME = (
    "nav, aside, [role=navigation], [role=banner], [role=contentinfo], [role=complementary], "
    "[role=search], .sphinxsidebar, .related, .navheader, .navfooter, .breadcrumb, .breadcrumbs, "
    ".sidebar, #sidebar, .menu, .skip-link, .toc, #toc, .footer, #footer"
)
_SECTIONING = {"article", "main", "section"}  # a header/footer inside one belongs to the content


def _html_to_text(html: str) -> DecodedText:
    """A page's main content (navigation, sidebars, page header and footer left out), its title
    and section headings.

    Main content is the page's ``<main>``/``role="main"`` element when it has one, else its body,
    less the chrome that the markup marks as such (``_CHROME``; a page-level ``<header>`` or
    ``<footer>``). Measured against each page's own content element (word precision / recall,
    pages/s on 2 cores): the Python 3.11 library manual (317 Sphinx pages) 1.000 / 0.997 at 475;
    Debian's reference manual (15 DocBook pages) 0.999 / 0.999 at 376. Generic extractors did
    worse on both: trafilatura 0.995 / 0.918 at 34 and 0.999 / 0.886 at 19; resiliparse's
    ``main_content`` heuristic 1.000 / 0.903 and 0.948 / 0.674 (it drops tables and whole
    paragraphs of DocBook); this module's visible-text parser alone 0.810 / 1.000 (sidebar text
    on every page). Text and title come from resiliparse (``extract_plain_text``, ``title``).
    """
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html)
    title = " ".join((tree.title or "").split()) or None
    root = tree.document.query_selector("main, [role=main]") if tree.document else None
    root = root or tree.body
    if root is None:  # not even an implied <body>: nothing a browser would show
        return DecodedText("", title)
    for node in [*root.query_selector_all(_CHROME), *_page_level(root, "header, footer")]:
        if node.parent is not None:
            node.parent.remove_child(node)
    source = tree if root is tree.body else root.html
    options = {"alt_texts": False, "links": False, "form_fields": False, "main_content": False}
    text = clean_text(extract_plain_text(source, **options))
    headings = [
        node.text.rstrip("¶#§ ") for node in root.query_selector_all("h1, h2, h3, h4, h5, h6")
    ]
    return DecodedText(text, title, locate_sections(text, headings))


def _page_level(root, selector: str) -> list:
    """Elements matching ``selector`` that are not inside an article, main or section."""
    found = []
    for node in root.query_selector_all(selector):
        parent = node.parent
        while parent is not None and parent is not root and parent.tag not in _SECTIONING:
            parent = parent.parent
        if parent is None or parent is root:
            found.append(node)
    return found
