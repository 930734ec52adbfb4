"""Token-aware chunking with overlap that prefers paragraph, then sentence, boundaries.

Every chunk is an exact slice of its input (``text == source[char_start:char_end]``), so a hit
can be shown in place. Lengths are measured with the text encoder's tokenizer when one is given
(``count_tokens``), else with a word/punctuation approximation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

_TOKEN = re.compile(r"\w+|[^\w\s]")
_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])[\"')\]]*\s+")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class TextChunk:
    text: str
    char_start: int
    char_end: int
    index: int


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int
    opens_paragraph: bool


def approximate_tokens(text: str) -> int:
    """Words and punctuation marks: close to WordPiece counts for English prose."""
    return len(_TOKEN.findall(text))


def chunk_text(
    text: str,
    *,
    max_tokens: int = 200,
    overlap_tokens: int = 40,
    count_tokens: Callable[[str], int] | None = None,
) -> list[TextChunk]:
    """Splits ``text`` into windows of at most ``max_tokens`` (by ``count_tokens``).

    Windows end at a paragraph break when one falls in their second half, else at a sentence
    end; a sentence longer than a window is split between words. Each window after the first
    starts with whole sentences from the end of the previous one, up to ``overlap_tokens``.
    """
    if max_tokens <= 0 or not 0 <= overlap_tokens < max_tokens:
        raise ValueError("need max_tokens > 0 and 0 <= overlap_tokens < max_tokens")
    count = count_tokens or approximate_tokens
    units = _units(text, max_tokens, count)
    chunks: list[TextChunk] = []
    first = 0
    while first < len(units):
        last, used = first, units[first].tokens
        while last + 1 < len(units) and used + units[last + 1].tokens <= max_tokens:
            nxt = units[last + 1]
            if nxt.opens_paragraph and used >= max_tokens // 2:
                break
            last += 1
            used += nxt.tokens
        start, end = units[first].start, units[last].end
        chunks.append(TextChunk(text[start:end], start, end, len(chunks)))
        if last + 1 >= len(units):
            break
        # Overlap: walk back over whole units while they fit in the overlap budget and still
        # leave room for the next new unit (so every window makes progress).
        carried, back, room = 0, last, max_tokens - units[last + 1].tokens
        while back > first and carried + units[back].tokens <= min(overlap_tokens, room):
            carried += units[back].tokens
            back -= 1
        first = back + 1 if back < last else last + 1
    return chunks


def _units(text: str, max_tokens: int, count: Callable[[str], int]) -> list[_Unit]:
    """Sentence spans (split further when too long), each flagged if it opens a paragraph."""
    units: list[_Unit] = []
    for paragraph in _spans(text, _PARAGRAPH, 0, len(text)):
        opens = True
        for sentence in _spans(text, _SENTENCE_END, *paragraph):
            piece = text[sentence[0] : sentence[1]]
            tokens = count(piece)
            if tokens <= max_tokens:
                units.append(_Unit(*sentence, tokens, opens))
            else:
                units.extend(_split_words(text, sentence, max_tokens, count, opens))
            opens = False
    return units


def _spans(text: str, separator: re.Pattern[str], start: int, end: int) -> list[tuple[int, int]]:
    """Non-blank pieces of ``text[start:end]`` between separators, trimmed of white space."""
    spans, cursor = [], start
    for match in separator.finditer(text, start, end):
        spans.append((cursor, match.start()))
        cursor = match.end()
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


def _split_words(
    text: str, span: tuple[int, int], max_tokens: int, count: Callable[[str], int], opens: bool
) -> list[_Unit]:
    """Packs whole words into units of at most ``max_tokens`` (word counts add up: the
    tokenizers we use split on white space first). A single giant word stands alone."""
    words = [(m.start(), m.end()) for m in _WORD.finditer(text, *span)]
    units: list[_Unit] = []
    first, used = 0, 0
    for i, (a, b) in enumerate(words):
        tokens = count(text[a:b])
        if i > first and used + tokens > max_tokens:
            units.append(_Unit(words[first][0], words[i - 1][1], used, opens and not units))
            first, used = i, 0
        used += tokens
    units.append(_Unit(words[first][0], words[-1][1], used, opens and not units))
    return units
