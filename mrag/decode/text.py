"""Text documents: plain text, Markdown and HTML (visible text only).

Output text keeps paragraph breaks (blank lines) so the chunker can prefer them, and collapses
other white space. Encoding detection, the clean-up and the streaming path for plain text are in
:mod:`mrag.decode.text_stream` (and importable from here); this module adds the markup formats,
Markdown read by a CommonMark parser (``markdown-it-py``) and HTML by ``resiliparse``, and the
title and section headings each chunk is indexed with.
"""

from __future__ import annotations

import codecs
import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mrag.decode.text_stream import bytes_to_str, clean_text, iter_text_chunks
from mrag.errors import DecodeError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from markdown_it import MarkdownIt
    from markdown_it.rules_block import StateBlock
    from markdown_it.rules_inline import StateInline
    from markdown_it.token import Token

__all__ = [
    "DecodedText",
    "bytes_to_str",
    "clean_text",
    "decode_text",
    "iter_text_chunks",
    "locate_sections",
    "section_at",
]


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


# ---------------------------------------------------------------------------------- Markdown

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?)\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_FRONT_MATTER_TITLE = re.compile(r"^title:\s*(.+?)\s*$", re.M)
_TASK_MARKER = re.compile(r"\[[ xX]\]\s+")
_FOOTNOTE_MARKER = re.compile(r"\[\^[^\]\s]+\]")


def _markdown_to_text(markdown: str) -> tuple[str, str | None, list[str]]:
    """Markdown → readable text, a title (front matter ``title:``, else the first level-1
    heading) and the headings in order.

    The document is parsed as CommonMark (with GitHub tables and strikethrough) and its blocks
    written out as text: headings, paragraphs, list items and table rows one per line, code
    blocks verbatim, link text and image alt text without their addresses, the visible text of
    HTML blocks, footnotes without their markers. Blocks that are adjacent in the source stay
    on adjacent lines (a tight list); a blank line in the source, a heading, a code block or a
    thematic break makes a paragraph break.
    """
    markdown = markdown.replace("\r\n", "\n").replace("\r", "\n")
    title = None
    front = _FRONT_MATTER.match(markdown)
    if front:
        found = _FRONT_MATTER_TITLE.search(front.group(1))
        title = found.group(1).strip("\"'") if found else None
        markdown = markdown[front.end() :]
    out: list[str] = []
    headings: list[str] = []
    last_line, apart = 0, False  # where the last block ended; whether a break must follow it
    tokens = _markdown_parser().parse(markdown)
    for at, token in enumerate(tokens):
        alone = False
        if token.type == "inline" and tokens[at - 1].type == "heading_open":
            text = " ".join(_inline_text(token.children or []).split())
            if tokens[at - 1].level == 0:  # not one quoted or in a list
                if title is None and tokens[at - 1].tag == "h1" and text:
                    title = text
                headings.append(text)
            alone = True
        elif token.type == "inline" and tokens[at - 1].type == "paragraph_open":
            text = _inline_text(token.children or [])
            if at >= 2 and tokens[at - 2].type == "list_item_open":
                text = _TASK_MARKER.sub("", text, count=1) if text.startswith("[") else text
        elif token.type in ("fence", "code_block"):
            text, alone = token.content, True
        elif token.type == "html_block":
            text = _html_fragment_text(token.content)
        elif token.type == "table_open":
            text = _table_text(tokens, at)
        elif token.type == "hr":
            text, alone = "", True
        else:
            continue
        first_line, end_line = token.map or (last_line, last_line)
        if not text.strip():  # a thematic break, an HTML comment: a paragraph break
            apart = True
        else:
            if out:
                out.append("\n\n" if apart or alone or first_line > last_line else "\n")
            out.append(text)
            apart = alone
        last_line = max(last_line, end_line)
    return "".join(out), title, headings


@functools.cache
def _markdown_parser() -> MarkdownIt:
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    # Footnotes (a GitHub extension): a definition is kept as a paragraph of text, not read as
    # a link reference definition; markers are dropped.
    parser.block.ruler.at("reference", _reference_not_footnote)
    parser.inline.ruler.before("link", "footnote_marker", _footnote_marker)
    return parser


def _reference_not_footnote(
    state: StateBlock, start_line: int, end_line: int, silent: bool
) -> bool:
    from markdown_it.rules_block import reference

    line_start = state.bMarks[start_line] + state.tShift[start_line]
    if state.src.startswith("[^", line_start):
        return False
    return reference(state, start_line, end_line, silent)


def _footnote_marker(state: StateInline, silent: bool) -> bool:
    """``[^label]`` → nothing; at the start of a paragraph, ``[^label]:`` (a definition)."""
    marker = _FOOTNOTE_MARKER.match(state.src, state.pos, state.posMax)
    if marker is None:
        return False
    end = marker.end()
    if state.pos == 0 and state.src.startswith(":", end):
        end += 1
        while end < state.posMax and state.src[end] in " \t":
            end += 1
    state.pos = end
    return True


def _inline_text(children: Sequence[Token]) -> str:
    """Visible text of inline tokens: text and code spans as written, line breaks kept, link
    and emphasis markup and inline HTML dropped, images as their alt text."""
    parts = []
    for child in children:
        if child.type in ("text", "text_special", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif child.type == "image":
            parts.append(_inline_text(child.children or []))
    return "".join(parts)


def _table_text(tokens: Sequence[Token], at: int) -> str:
    """A table's rows, one per line, its cells separated by spaces."""
    rows: list[str] = []
    cells: list[str] = []
    for index in range(at + 1, len(tokens)):
        token = tokens[index]
        if token.type == "table_close":
            break
        if token.type == "inline":
            cells.append(" ".join(_inline_text(token.children or []).split()))
        elif token.type == "tr_close":
            rows.append(" ".join(cell for cell in cells if cell))
            cells = []
    return "\n".join(rows)


def _html_fragment_text(html: str) -> str:
    """What a browser shows of an HTML block in Markdown (none of a comment or a script)."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    options = {"alt_texts": False, "links": False, "form_fields": False, "main_content": False}
    return extract_plain_text(HTMLTree.parse(html), **options)


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
