"""Text documents: plain text (encoding detection), Markdown and HTML (visible text only).

Output text keeps paragraph breaks (blank lines) so the chunker can prefer them, and collapses
other white space. Binary junk with a text extension is a ``BinaryContent`` error, not a chunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

from mrag.errors import DecodeError

_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class DecodedText:
    text: str
    title: str | None = None


def kind_for_extension(extension: str) -> str | None:
    """``.TXT`` → ``text``, ``.md`` → ``markdown``, ``.htm`` → ``html``; else ``None``."""
    return {
        ".txt": "text",
        ".text": "text",
        ".md": "markdown",
        ".markdown": "markdown",
        ".html": "html",
        ".htm": "html",
    }.get(extension.lower())


def decode_text(data: bytes, *, kind: str) -> DecodedText:
    """Bytes of a ``text``, ``markdown`` or ``html`` document → its searchable text."""
    raw = bytes_to_str(data)
    if kind == "html":
        decoded = _html_to_text(raw)
    elif kind == "markdown":
        decoded = DecodedText(_normalise(_markdown_to_text(raw)), _markdown_title(raw))
    elif kind == "text":
        decoded = DecodedText(_normalise(raw))
    else:
        raise ValueError(f"unknown text kind {kind!r}")
    if not decoded.text.strip():
        raise DecodeError("document has no visible text", error_class="EmptyObject")
    return decoded


def bytes_to_str(data: bytes) -> str:
    """Decodes with a BOM, else UTF-8, else the detected charset; refuses binary content."""
    if not data.strip():
        raise DecodeError("object is empty", error_class="EmptyObject")
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _check_textual(data.decode(encoding, errors="replace"))
    if b"\x00" in data[:8192]:
        raise DecodeError(
            "binary content (NUL bytes) in a text document", error_class="BinaryContent"
        )
    try:
        return _check_textual(data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise DecodeError("no text encoding fits these bytes", error_class="BinaryContent")
    return _check_textual(str(best))


def _check_textual(text: str) -> str:
    sample = text[:20000]
    controls = len(_CONTROL.findall(sample)) + sample.count("\ufffd")
    if sample and controls / len(sample) > 0.05:
        raise DecodeError(
            f"binary content: {controls} control or undecodable characters in the first "
            f"{len(sample)}",
            error_class="BinaryContent",
        )
    return text


def _normalise(text: str) -> str:
    """Collapses runs of spaces, keeps single newlines and paragraph breaks (blank lines)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [re.sub(r"[ \t\f\v\u00a0]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


_MD_RULES = [
    (re.compile(r"^```.*$", re.M), ""),  # code fences (the code itself stays)
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # images → alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # links → link text
    (re.compile(r"^\s{0,3}#{1,6}\s*", re.M), ""),  # heading markers
    (re.compile(r"^\s{0,3}>\s?", re.M), ""),  # block quotes
    (re.compile(r"^\s*[-*_]{3,}\s*$", re.M), ""),  # horizontal rules
    (re.compile(r"^\s*\|?[-:| ]+\|[-:| ]*$", re.M), ""),  # table separator rows
    (re.compile(r"(\*\*|__)(.+?)\1"), r"\2"),  # bold
    (re.compile(r"(?<![\w*])[*_](?!\s)(.+?)(?<!\s)[*_](?![\w*])"), r"\1"),  # italics
    (re.compile(r"`([^`]*)`"), r"\1"),  # inline code
    (re.compile(r"<[^>\n]+>"), ""),  # inline HTML tags
    (re.compile(r"\|"), " "),  # table cells
]


def _markdown_to_text(markdown: str) -> str:
    for pattern, replacement in _MD_RULES:
        markdown = pattern.sub(replacement, markdown)
    return markdown


def _markdown_title(markdown: str) -> str | None:
    match = re.search(r"^\s{0,3}#\s+(.+?)\s*#*\s*$", markdown, re.M)
    return match.group(1).strip() if match else None


_SKIP = {"script", "style", "noscript", "template", "svg", "head", "iframe", "object"}
_BLOCK = {
    "p", "div", "section", "article", "header", "footer", "main", "aside", "nav", "li", "ul",
    "ol", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "figure",
    "figcaption", "dl", "dt", "dd", "form", "fieldset", "address", "hr",
}  # fmt: skip


class _VisibleText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title_parts: list[str] = []
        self._skip_depth = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIP:
            self._skip_depth += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCK:
            self.parts.append("\n\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title_parts.append(data)
        elif not self._skip_depth:
            self.parts.append(data.replace("\n", " "))


def _html_to_text(html: str) -> DecodedText:
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    title = " ".join("".join(parser.title_parts).split()) or None
    return DecodedText(_normalise("".join(parser.parts)), title)
