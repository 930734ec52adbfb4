"""Plain text from bytes: encoding detection, the one clean-up, and chunks read from a stream.

Encoding detection, in order: a byte-order mark; UTF-16 without a BOM (NUL bytes in every other
position); UTF-8 (also when a few bytes are damaged, e.g. a file cut mid-character); for HTML, the
charset its ``<meta>`` tag declares; then ``charset_normalizer``, with ties and guesses made on
too little evidence resolved towards cp1252, the commonest legacy encoding of Western text
(``charset_normalizer`` alone reads short or accent-light cp1252 text as cp1250, Big5 or UTF-16).
Binary junk with a text extension is a ``BinaryContent`` error, not text.

:func:`iter_text_chunks` reads a text file in windows, so memory follows the window, not the
file. Whole, a 40 MB one-line file took its decode worker to 3.1 GiB: the chunker asked the
tokenizer for the length of the whole line (measured: +6.1 GiB for 40 MB of words, +2.4 GiB
without spaces, with the MiniLM tokenizer), and the clean-up and the token approximation each
made a string per word (+0.45 GiB each).
"""

from __future__ import annotations

import codecs
import functools
import re
import unicodedata
from typing import TYPE_CHECKING, BinaryIO

from mrag.chunk import IncrementalChunker
from mrag.errors import DecodeError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from mrag.chunk import TextChunk

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
_ANSI_UNFINISHED = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*)?")
_SAMPLE_BYTES = 8192
_HEAD_BYTES = 1 << 16  # what a stream's encoding is detected from, at least
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
_SEPARATORS = (" ", "\n", "\n\n")  # white space with 0, 1, 2+ line breaks, once cleaned
_CLEAN_PIECE_CHARS = 1 << 20


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
        return _check_textual(data.decode(_wide_encoding(data), errors="replace"))
    text = _utf8(data)
    if text is not None:
        return _check_textual(text)
    encoding = declared if declared is not None else _guess_8bit(data)
    return _check_textual(data.decode(encoding, errors="replace"))


def _wide_encoding(data: bytes) -> str:
    """``utf-16-le``/``-be`` when NULs sit in every other byte (mostly-ASCII UTF-16); other
    NULs are binary content."""
    sample = data[: _SAMPLE_BYTES - _SAMPLE_BYTES % 2]
    half = len(sample) // 2
    even_nuls, odd_nuls = sample[0::2].count(0), sample[1::2].count(0)
    if half >= 2 and odd_nuls > 0.3 * half and even_nuls < 0.05 * half:
        return "utf-16-le"
    if half >= 2 and even_nuls > 0.3 * half and odd_nuls < 0.05 * half:
        return "utf-16-be"
    raise DecodeError("binary content (NUL bytes) in a text document", error_class="BinaryContent")


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
    """The 8-bit encoding ``data`` is most likely in."""
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data, cp_exclusion=_WIDE_ENCODINGS))
    western = _looks_cp1252(data)
    if not matches:
        if not western:
            raise DecodeError("no text encoding fits these bytes", error_class="BinaryContent")
        return "cp1252"
    best = matches[0]
    tied = [m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    if western and (
        best.coherence == 0.0  # no language evidence: a short or accent-light sample
        or any("cp1252" in m.could_be_from_charset for m in tied)
    ):
        return "cp1252"
    return best.encoding


def _looks_cp1252(data: bytes) -> bool:
    """Whether ``data`` read as cp1252 looks like Western European text: every non-ASCII
    character a letter or common typographic mark, and few enough of them (an accent here and
    there, not whole words as Cyrillic or Greek read through the wrong code page would be)."""
    high = data.translate(None, _ASCII_BYTES)  # byte-level work: fast on big files
    if high.translate(None, _CP1252_LETTERS + _CP1252_MARKS):
        return False  # an undefined byte, a control character or an unlikely symbol
    non_ascii_letters = len(high.translate(None, _CP1252_MARKS))
    ascii_letters = len(data.translate(None, _NOT_ASCII_LETTERS))
    return non_ascii_letters * 2 <= ascii_letters


def _check_textual(text: str) -> str:
    sample = text[:20000]
    bad = len(_CONTROL.findall(sample)) + sample.count("\ufffd")
    if sample and bad / len(sample) > _MAX_BINARY_RATIO:
        raise DecodeError(
            f"binary content: {bad} control or undecodable characters in the first {len(sample)}",
            error_class="BinaryContent",
        )
    return text


# ------------------------------------------------------------------------------- clean-up


def clean_text(text: str) -> str:
    """The one text clean-up for every source (documents, PDF text layers, OCR, later
    transcripts): NFC, no control or non-characters, runs of spaces collapsed, single newlines
    and paragraph breaks (one blank line) kept; "" when only blanks remain."""
    cleaner = TextCleaner()
    pieces = [
        cleaner.clean(text[start : start + _CLEAN_PIECE_CHARS])
        for start in range(0, len(text), _CLEAN_PIECE_CHARS)
    ]
    pieces.append(cleaner.clean("", final=True))
    return "".join(pieces)


class TextCleaner:
    """:func:`clean_text` over a text that arrives in pieces, in the manner of
    ``codecs.IncrementalDecoder``: call :meth:`clean` with each piece in order, and with
    ``final=True`` for the last; the results, joined, are ``clean_text`` of the whole.

    A piece is cleaned up to its last point that no later text can change (a space, else a
    character that Unicode normalization cannot join to the one before, outside a terminal
    escape code and a CR LF pair); the rest waits for the next piece. White space is written
    out only when the next word comes, as the one space, line break or blank line it becomes.
    """

    def __init__(self) -> None:
        self._carry = ""
        self._newlines: int | None = None  # line breaks in the white space since the last word
        self._started = False

    def clean(self, text: str, final: bool = False) -> str:
        text, held = self._carry + text, ""
        if text.endswith("\r") and not final:
            text, held = text[:-1], "\r"  # it may be half of a CR LF
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
        cut = len(text) if final else _settled_length(text)
        text, self._carry = _normalize(text[:cut]), text[cut:] + held
        body = text.strip()
        if not body:
            if text:
                self._newlines = (self._newlines or 0) + text.count("\n")
            return ""
        lead = len(text) - len(text.lstrip())
        if lead:
            self._newlines = (self._newlines or 0) + text.count("\n", 0, lead)
        gap = ""
        if self._started and self._newlines is not None:
            gap = _SEPARATORS[min(self._newlines, 2)]
        trail = len(text) - lead - len(body)
        self._newlines = text.count("\n", len(text) - trail) if trail else None
        self._started = True
        lines: list[str] = []
        for line in body.split("\n"):  # str methods, not regexes: several times faster
            line = " ".join(line.split())  # every Unicode space, tab or NBSP run → one space
            if line or lines[-1]:
                lines.append(line)
        return gap + "\n".join(lines)


def _normalize(text: str) -> str:
    """The clean-up before white space is collapsed, after line breaks are made LF and the
    U+FEFF byte-order marks dropped."""
    if "\x1b" in text:
        text = _ANSI_ESCAPE.sub("", text)
    return _STRIPPED.sub("", unicodedata.normalize("NFC", text))


def _settled_length(text: str) -> int:
    """Where ``text`` can be cut so that each side cleans as it would within the whole: before
    the last space or line break of its second half, else before the last character there that
    NFC never composes with what precedes it; 0 (nothing settled yet) when there is none. Over
    a megabyte without one (combining marks, a terminal escape code that never ends), the text
    is cut in the middle anyway, and may clean differently there from the whole."""
    low = len(text) // 2
    cut = max(text.rfind(" ", low), text.rfind("\n", low))
    if cut >= 0 and _can_cut(text, cut):
        return cut
    cut = next((i for i in range(len(text) - 1, low - 1, -1) if _can_cut(text, i)), -1)
    if cut < 0:  # carry it all to the next piece, unless that lets the carry grow unbounded
        cut = low if len(text) > _CLEAN_PIECE_CHARS else 0
    return cut


def _can_cut(text: str, at: int) -> bool:
    """Whether cleaning ``text[:at]`` and ``text[at:]`` apart is cleaning them together."""
    char = text[at]
    if char == "\x1b" or not _starts_fresh(char):  # an escape code goes before NFC
        return False
    escape = text.rfind("\x1b", 0, at)  # not inside a terminal escape code
    return escape < 0 or _ANSI_UNFINISHED.fullmatch(text, escape, at) is None


def _starts_fresh(char: str) -> bool:
    """Whether NFC leaves ``char`` and everything after it apart from what comes before."""
    if char.isascii() or char.isspace():
        return True
    decomposed = unicodedata.normalize("NFD", char)[0]
    return unicodedata.combining(decomposed) == 0 and decomposed not in _composes_backwards()


@functools.cache
def _composes_backwards() -> frozenset[str]:
    """Starters that NFC joins to the character before them (Hangul vowel and final jamo, and
    some Brahmic vowel signs: U+0BBE turns U+0BC6 into U+0BCA). Built from the Unicode data on
    first use (0.1 s) rather than listed, so it follows Python's Unicode version."""
    found = {chr(c) for c in range(0x1161, 0x1176)} | {chr(c) for c in range(0x11A8, 0x11C3)}
    for code in range(0x110000):
        decomposition = unicodedata.decomposition(chr(code))
        if not decomposition or decomposition.startswith("<"):
            continue
        parts = [chr(int(part, 16)) for part in decomposition.split()]
        if (
            len(parts) == 2
            and unicodedata.combining(parts[1]) == 0
            and unicodedata.normalize("NFC", "".join(parts)) == chr(code)
        ):
            found.add(parts[1])
    return frozenset(found)


# -------------------------------------------------------------------------------- streaming


def iter_text_chunks(
    source: BinaryIO,
    *,
    max_tokens: int,
    overlap_tokens: int,
    count_tokens: Callable[[str], int] | None = None,
    window_chars: int = 1 << 20,
) -> Iterator[TextChunk]:
    """A plain-text file's chunks, read from ``source`` a window at a time.

    The chunks are those of :func:`mrag.chunk.chunk_text` on ``clean_text`` of the whole
    decoded file, offsets included, exactly so when the encoding is detected as on the whole
    (always for files up to ``max(window_chars, 64 KiB)`` bytes). A longer file's encoding is
    detected from that much of its start; one that starts in ASCII is read as UTF-8 until its
    first non-ASCII window, from which the encoding is detected and kept. Memory is a few
    windows, plus a few times ``max_tokens * 32`` characters of open text (see
    :class:`mrag.chunk.IncrementalChunker`).

    Args:
        source: the file, open for reading bytes, at its start; read to its end, not closed.
        max_tokens: the window size, as :func:`mrag.chunk.chunk_text` takes it.
        overlap_tokens: the overlap, as ``chunk_text`` takes it.
        count_tokens: the text encoder's token count (``None``: an approximation).
        window_chars: bytes read at a time, and so at most as many characters decoded.

    Raises:
        ValueError: bad chunk settings (at the call).
        DecodeError: ``BinaryContent``, decided on the start of the file (when iterated). A
            blank file yields no chunks.
    """
    if window_chars < 1:
        raise ValueError(f"window_chars must be >= 1, got {window_chars}")
    chunker = IncrementalChunker(
        max_tokens=max_tokens, overlap_tokens=overlap_tokens, count_tokens=count_tokens
    )
    return _stream_chunks(source, chunker, window_chars)


def _stream_chunks(
    source: BinaryIO, chunker: IncrementalChunker, window_chars: int
) -> Iterator[TextChunk]:
    cleaner = TextCleaner()
    for piece in _decoded_windows(source, window_chars):
        yield from chunker.chunk(cleaner.clean(piece))
    yield from chunker.chunk(cleaner.clean("", final=True), final=True)


def _decoded_windows(source: BinaryIO, window_bytes: int) -> Iterator[str]:
    """The text of ``source``, decoded a window at a time with an incremental decoder."""
    head_bytes = max(window_bytes, _HEAD_BYTES)
    head = _read(source, head_bytes)
    if len(head) < head_bytes:  # the whole file: decoded exactly as decode_text decodes it
        if head.strip():
            yield bytes_to_str(head)
        return
    encoding, tentative = _stream_encoding(head)
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    yield _check_textual(decoder.decode(head))
    while block := _read(source, window_bytes):
        if tentative and not block.isascii():  # ASCII so far: the first other bytes decide
            final = len(block) < window_bytes
            encoding, tentative = _stream_encoding(block, final=final, binary_is_error=False)
            decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        yield decoder.decode(block)
    yield decoder.decode(b"", final=True)


def _stream_encoding(
    sample: bytes, *, final: bool = False, binary_is_error: bool = True
) -> tuple[str, bool]:
    """The codec to read a stream with, judged from ``sample`` (its start, or its first
    non-ASCII window) as :func:`bytes_to_str` judges a whole file, and whether the sample was
    all ASCII (so only tentatively UTF-8)."""
    for bom, encoding in _BOMS:
        if sample.startswith(bom):
            return encoding, False
    if b"\x00" in sample[:_SAMPLE_BYTES]:
        try:
            return _wide_encoding(sample), False
        except DecodeError:
            if binary_is_error:
                raise
            return "utf-8", False
    if sample.isascii():
        return "utf-8", True
    if not final:
        try:  # valid up to a character cut at the end of the sample
            codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
            return "utf-8", False
        except UnicodeDecodeError:
            pass
    if _utf8(sample) is not None:
        return "utf-8", False
    try:
        return _guess_8bit(sample), False
    except DecodeError:
        if binary_is_error:
            raise
        return "utf-8", False


def _read(source: BinaryIO, size: int) -> bytes:
    """``size`` bytes, fewer only at the end (a raw stream may return less per read)."""
    data = source.read(size)
    while data and len(data) < size:
        more = source.read(size - len(data))
        if not more:
            break
        data += more
    return data
