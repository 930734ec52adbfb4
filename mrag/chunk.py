"""Token-aware chunking with overlap that prefers paragraph, then sentence, boundaries.

Every chunk is an exact slice of its input (``text == source[char_start:char_end]``), so a hit
can be shown in place, and every non-space character of the input is in at least one chunk.
Lengths are measured with the text encoder's tokenizer when one is given (``count_tokens``),
else with a word/punctuation approximation.

Long input costs time and memory in proportion to its length: no string longer than
``max_tokens * 32`` characters is ever counted (a tokenizer asked for the length of a 40 MB
line allocates gigabytes), and :class:`IncrementalChunker` chunks a text that arrives in pieces,
holding only the piece and a few windows, with exactly the chunks :func:`chunk_text` gives on
the whole text.

Callers chunk each PDF page separately and attach the page number themselves.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

# Scripts written without spaces between words: one character is about one token.
_CJK = "\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\f\v\r]*\n\s*")
# A sentence ends at . ! ? (then closing quotes or brackets) before white space and a word that
# does not start in lower case ("e.g. this" is one sentence), or at a CJK full stop, where no
# space follows. Only the white space (group 1 or 2) separates sentences: the marks stay.
_SENTENCE_BREAK = re.compile(
    r"[.!?…]+[\"'’”)\]»]*(\s+)(?![\sa-z])|[。！？]+[\"'’”）」』】〉》]*(\s*)"
)
_WORD = re.compile(r"\S+")
# No unit or window is longer than this many characters per token of max_tokens: ordinary text
# has 3-6 (English) or about 1 (CJK); more means a tokenizer that reads a long run as one
# unknown token (WordPiece does, for any word over 100 characters), whose window would
# otherwise grow without bound.
_MAX_CHARS_PER_TOKEN = 32
_WINDOW_CHARS = 1 << 20  # chunk_text feeds long texts to the incremental chunker in pieces


@dataclass(frozen=True)
class TextChunk:
    text: str  # == source[char_start:char_end]
    char_start: int
    char_end: int
    index: int  # 0-based position among the chunks of one source text


@dataclass(frozen=True, slots=True)
class _Unit:
    """A span the chunker never cuts: a sentence, or a piece of one that was too long."""

    start: int
    end: int
    tokens: int
    opens_paragraph: bool


def approximate_tokens(text: str) -> int:
    """Words and punctuation marks, each CJK character, and a token per 10 characters of long
    words: close to WordPiece counts for English prose, and never wildly under for other text."""
    words = _TOKEN.findall(text)
    return len(words) + sum((len(word) - 1) // 10 for word in words if len(word) > 10)


def chunk_text(
    text: str,
    *,
    max_tokens: int = 200,
    overlap_tokens: int = 40,
    count_tokens: Callable[[str], int] | None = None,
) -> list[TextChunk]:
    """Splits ``text`` into windows of at most ``max_tokens`` tokens.

    A window ends at a paragraph break once it is at least half full, else at the last sentence
    end that fits; a sentence longer than a window is split between words, and a word longer
    than a window between characters. Each window after the first starts with whole sentences
    from the end of the previous one, up to ``overlap_tokens``. No window, sentence or word is
    taken whole when longer than ``max_tokens * 32`` characters, whatever its count.

    Args:
        text: the source text; chunks are slices of it, offsets index into it.
        max_tokens: the window size, as ``count_tokens`` measures it (keep it under the text
            encoder's limit; its special tokens are not counted).
        overlap_tokens: how much of the end of one window the next repeats, 0 for none.
        count_tokens: the encoder's own token count, e.g.
            ``lambda s: len(tok(s, add_special_tokens=False)["input_ids"])``;
            ``None`` uses :func:`approximate_tokens`.

    Returns:
        Chunks in order, none empty or only white space; ``[]`` for blank text.
    """
    chunker = IncrementalChunker(
        max_tokens=max_tokens, overlap_tokens=overlap_tokens, count_tokens=count_tokens
    )
    chunks: list[TextChunk] = []
    for start in range(0, len(text), _WINDOW_CHARS):
        chunks.extend(chunker.chunk(text[start : start + _WINDOW_CHARS]))
    chunks.extend(chunker.chunk("", final=True))
    return chunks


class IncrementalChunker:
    """:func:`chunk_text` over a text that arrives in pieces, in the manner of
    ``codecs.IncrementalDecoder``: call :meth:`chunk` with each piece in order, and with
    ``final=True`` for the last (it may be empty). The chunks, together, are exactly those
    ``chunk_text`` gives on the whole text; their offsets index into the whole text.

    Memory is the piece plus what is still open at its end: the sentence being read (its
    settled words are packed as they come when it is too long for one window), the current
    window and its overlap, each at most ``max_tokens * 32`` characters. What is open is
    scanned again with each piece, so time is linear in the text when pieces are long next to
    that (``chunk_text`` feeds a megabyte at a time). After ``final=True`` the chunker is spent.
    """

    def __init__(
        self,
        *,
        max_tokens: int = 200,
        overlap_tokens: int = 40,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be > 0, got {max_tokens}")
        if not 0 <= overlap_tokens < max_tokens:
            raise ValueError(
                f"overlap_tokens must be >= 0 and < max_tokens ({max_tokens}), got {overlap_tokens}"
            )
        self._max_tokens, self._overlap_tokens = max_tokens, overlap_tokens
        self._max_chars = max_tokens * _MAX_CHARS_PER_TOKEN
        self._count = count_tokens or approximate_tokens
        # Long sentences are packed word by word, and words repeat: a tokenizer call costs more
        # than the lookup.
        self._word_tokens = functools.lru_cache(maxsize=1 << 14)(self._count)
        self._recount = count_tokens is not None  # unit counts need not add up for subword models
        self._text, self._base = "", 0  # the text from offset _base on, as far as it has come
        # Segmentation: where the next unit starts, whether it opens a paragraph, whether it is
        # in a sentence already known to be too long, and, inside a word being cut between
        # characters, that cut's characters per token.
        self._pos, self._opens, self._long = 0, True, False
        self._chars_per_token: float | None = None
        # Packing: units from the current window's first on; the first unit no chunk holds yet.
        self._units: list[_Unit] = []
        self._first = self._fresh = 0
        self._overlap_due = False  # a window was cut; the next one's start is still to choose
        self._index = 0

    def chunk(self, text: str, final: bool = False) -> list[TextChunk]:
        """The chunks that ``text`` (the next piece) completes; with ``final``, all the rest."""
        self._text += text
        self._units.extend(self._segment(final))
        chunks = self._pack(final)
        del self._units[: self._first]
        self._fresh -= self._first
        self._first = 0
        keep = min(self._pos, self._units[0].start) if self._units else self._pos
        if keep > self._base:
            self._text, self._base = self._text[keep - self._base :], keep
        return chunks

    # ------------------------------------------------------------------------- segmentation

    def _segment(self, final: bool) -> list[_Unit]:
        """Units from ``_pos`` that no further text can change: all but the last sentence (it
        may go on), and of a last sentence too long for one unit, the words packed so far."""
        text, base = self._text, self._base
        units: list[_Unit] = []
        spans = _sentences(text, self._pos - base, self._opens)
        if not spans:  # only white space so far (text is never blank after a sentence)
            self._pos = base + len(text)
            return units
        for i, (start, end, opens) in enumerate(spans):
            is_open = i == len(spans) - 1 and not final  # more text may lengthen it
            continued = i == 0 and self._long
            too_long = continued or end - start > self._max_chars
            if not too_long and not is_open:
                tokens = self._count(text[start:end])
                if tokens <= self._max_tokens:
                    units.append(_Unit(base + start, base + end, tokens, opens))
                    continue
                too_long = True
            if not too_long:  # the open sentence is short so far: wait for its end
                self._pos, self._opens, self._long = base + start, opens, False
                return units
            per_token = self._chars_per_token if continued else None
            pieces, resume, per_token = self._split_words(start, end, opens, per_token, is_open)
            units.extend(pieces)
            if is_open:
                self._pos, self._opens, self._long = base + resume, opens and not pieces, True
                self._chars_per_token = per_token
                return units
        self._pos, self._opens, self._long = base + len(text), True, False
        self._chars_per_token = None
        return units

    def _split_words(
        self, start: int, end: int, opens: bool, per_token: float | None, is_open: bool
    ) -> tuple[list[_Unit], int, float | None]:
        """Packs whole words of ``_text[start:end]`` into units of at most ``max_tokens``, adding
        up per-word counts (the tokenizers we use split on white space first); a word longer
        than that is cut between characters. ``per_token`` continues such a cut (``start`` is
        inside the word). When ``is_open``, the last word and the unfinished unit wait for more
        text: returns the units, where to resume, and the cut's state there."""
        text, base = self._text, self._base
        units: list[_Unit] = []
        first = last = -1  # the word span being packed
        used = 0
        for word in _WORD.finditer(text, start, end):
            word_start, word_end = word.span()
            word_is_open = is_open and word_end == end
            if word_is_open and per_token is None and word_end - word_start <= self._max_chars:
                return units, (first if first >= 0 else word_start), None
            tokens = 0
            cut = per_token is not None or word_end - word_start > self._max_chars
            if not cut:
                tokens = self._word_tokens(word.group())
                cut = tokens > self._max_tokens
            if first >= 0 and (
                cut or used + tokens > self._max_tokens or word_end - first > self._max_chars
            ):
                units.append(_Unit(base + first, base + last, used, opens and not units))
                first, used = -1, 0
            if cut:
                pieces, resume, per_token = self._split_chars(
                    word_start, word_end, opens and not units, per_token, word_is_open
                )
                units.extend(pieces)
                if word_is_open:
                    return units, resume, per_token
                per_token = None
                continue
            if first < 0:
                first = word_start
            last, used = word_end, used + tokens
        if first >= 0:
            units.append(_Unit(base + first, base + last, used, opens and not units))
        return units, end, None

    def _split_chars(
        self, start: int, end: int, opens: bool, per_token: float | None, is_open: bool
    ) -> tuple[list[_Unit], int, float]:
        """Cuts one giant "word" (a run of CJK text, a data blob) into pieces that fit, guessing
        each piece's length from the characters-per-token seen so far and shrinking until it
        fits. An open word's last piece waits for more text (a piece never ends where the text
        so far does), so every piece is the one the whole word would give."""
        text, base, max_tokens = self._text, self._base, self._max_tokens
        units: list[_Unit] = []
        per_token = 4.0 if per_token is None else per_token
        while start < end:
            size = max(1, int(max_tokens * per_token))
            if is_open and start + size >= end:
                break
            stop = min(end, start + size)
            tokens = self._count(text[start:stop])
            while tokens > max_tokens and stop - start > 1:
                stop = start + max(1, (stop - start) * max_tokens // (tokens + 1))
                tokens = self._count(text[start:stop])
            units.append(_Unit(base + start, base + stop, tokens, opens and not units))
            per_token = min(_MAX_CHARS_PER_TOKEN, max(1.0, (stop - start) / max(tokens, 1)))
            start = stop
        return units, start, per_token

    # ------------------------------------------------------------------------------ packing

    def _pack(self, final: bool) -> list[TextChunk]:
        """Windows of whole units, each cut once the unit after it is known (or at the end)."""
        units, max_tokens, max_chars = self._units, self._max_tokens, self._max_chars
        chunks: list[TextChunk] = []
        while True:
            if self._overlap_due:
                if self._fresh == len(units):
                    return chunks  # the next unit decides the overlap; at the end, none comes
                self._first = self._overlap_start()
                self._overlap_due = False
            first, fresh = self._first, self._fresh
            if first == len(units):
                return chunks
            last, used = first, units[first].tokens
            while True:
                if last + 1 == len(units):
                    if not final:
                        return chunks  # the unit after decides where this window ends
                    break
                following = units[last + 1]
                if used + following.tokens > max_tokens:
                    break
                if following.end - units[first].start > max_chars:
                    break
                if following.opens_paragraph and last >= fresh and used >= max_tokens // 2:
                    break
                last += 1
                used += following.tokens
            if self._recount:
                while self._count(self._slice(units[first].start, units[last].end)) > max_tokens:
                    if first < fresh:
                        first += 1  # shed overlap before new text
                    elif last > first:
                        last -= 1
                    else:
                        break
            start, end = units[first].start, units[last].end
            chunks.append(TextChunk(self._slice(start, end), start, end, self._index))
            self._index += 1
            self._first, self._fresh, self._overlap_due = first, last + 1, True

    def _overlap_start(self) -> int:
        """Carries whole units from the end of the last window while they fit the overlap
        budget and leave room for the next new unit; never the whole window, so every window
        advances."""
        units, fresh = self._units, self._fresh
        following = units[fresh]
        budget = min(self._overlap_tokens, self._max_tokens - following.tokens)
        window_first, first, carried = self._first, fresh, 0
        while (
            first - 1 > window_first
            and carried + units[first - 1].tokens <= budget
            and following.end - units[first - 1].start <= self._max_chars
        ):
            first -= 1
            carried += units[first].tokens
        return first

    def _slice(self, start: int, end: int) -> str:
        return self._text[start - self._base : end - self._base]


def _sentences(text: str, start: int, opens: bool) -> list[tuple[int, int, bool]]:
    """Sentence spans of ``text[start:]``, each flagged if it opens a paragraph (the first one
    if ``opens``: ``start`` is where a sentence starts, or inside one)."""
    spans = []
    for paragraph in _spans(text, _PARAGRAPH_BREAK, start, len(text)):
        for sentence_start, sentence_end in _spans(text, _SENTENCE_BREAK, *paragraph):
            spans.append((sentence_start, sentence_end, opens))
            opens = False
        opens = True
    return spans


def _spans(text: str, separator: re.Pattern[str], start: int, end: int) -> list[tuple[int, int]]:
    """Non-blank pieces of ``text[start:end]`` between separators, trimmed of white space.

    A separator is the pattern's matched group if it has one (the white space after a full
    stop), else the whole match.
    """
    spans, cursor = [], start
    for match in separator.finditer(text, start, end):
        group = match.lastindex or 0
        spans.append((cursor, match.start(group)))
        cursor = match.end(group)
    spans.append((cursor, end))
    trimmed = []
    for a, b in spans:
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            trimmed.append((a, b))
    return trimmed


def cut_to_tokens(text: str, budget: int, count: Callable[[str], int]) -> str:
    """The longest prefix of ``text`` within ``budget`` tokens, cut at white space if possible."""
    low, high = 0, len(text)
    while low < high:  # largest prefix length whose count fits
        middle = (low + high + 1) // 2
        if count(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    cut = text[:low]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if low < len(text) and space > len(cut) // 2:
        cut = cut[:space]
    return cut.rstrip()
