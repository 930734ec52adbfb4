"""Token-aware chunking with overlap that prefers paragraph, then sentence, boundaries.

Every chunk is an exact slice of its input (``text == source[char_start:char_end]``), so a hit
can be shown in place, and every non-space character of the input is in at least one chunk.
Lengths are measured with the text encoder's tokenizer when one is given (``count_tokens``),
else with a word/punctuation approximation.

Callers chunk each PDF page separately and attach the page number themselves.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class TextChunk:
    text: str  # == source[char_start:char_end]
    char_start: int
    char_end: int
    index: int  # 0-based position among the chunks of one source text


@dataclass(frozen=True)
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
    from the end of the previous one, up to ``overlap_tokens``.

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
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be > 0, got {max_tokens}")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError(
            f"overlap_tokens must be >= 0 and < max_tokens ({max_tokens}), got {overlap_tokens}"
        )
    count = count_tokens or approximate_tokens
    units = _units(text, max_tokens, count)
    chunks: list[TextChunk] = []
    first = fresh = 0  # fresh: the first unit that no chunk holds yet
    while fresh < len(units):
        last, used = first, units[first].tokens
        while last + 1 < len(units) and used + units[last + 1].tokens <= max_tokens:
            following = units[last + 1]
            if following.opens_paragraph and last >= fresh and used >= max_tokens // 2:
                break
            last += 1
            used += following.tokens
        if count_tokens is not None:  # unit counts need not add up exactly for subword models
            while count(text[units[first].start : units[last].end]) > max_tokens:
                if first < fresh:
                    first += 1  # shed overlap before new text
                elif last > first:
                    last -= 1
                else:
                    break
        start, end = units[first].start, units[last].end
        chunks.append(TextChunk(text[start:end], start, end, len(chunks)))
        fresh = last + 1
        if fresh == len(units):
            break
        # Carry whole units from the end of this window while they fit the overlap budget and
        # leave room for the next new unit; never the whole window, so every window advances.
        budget = min(overlap_tokens, max_tokens - units[fresh].tokens)
        window_first, first, carried = first, fresh, 0
        while first - 1 > window_first and carried + units[first - 1].tokens <= budget:
            first -= 1
            carried += units[first].tokens
    return chunks


def _units(text: str, max_tokens: int, count: Callable[[str], int]) -> list[_Unit]:
    """Sentence spans (split further when too long), each flagged if it opens a paragraph."""
    units: list[_Unit] = []
    for paragraph in _spans(text, _PARAGRAPH_BREAK, 0, len(text)):
        opens = True
        for sentence in _spans(text, _SENTENCE_BREAK, *paragraph):
            tokens = count(text[sentence[0] : sentence[1]])
            if tokens <= max_tokens:
                units.append(_Unit(*sentence, tokens, opens))
            else:
                units.extend(_split_words(text, sentence, max_tokens, count, opens))
            opens = False
    return units


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


def _split_words(
    text: str, span: tuple[int, int], max_tokens: int, count: Callable[[str], int], opens: bool
) -> list[_Unit]:
    """Packs whole words into units of at most ``max_tokens``, adding up per-word counts (the
    tokenizers we use split on white space first); a word longer than that is cut between
    characters."""
    units: list[_Unit] = []
    first = last = -1  # the word span being packed
    used = 0
    for word in _WORD.finditer(text, *span):
        tokens = count(word.group())
        if first >= 0 and used + tokens > max_tokens:
            units.append(_Unit(first, last, used, opens and not units))
            first, used = -1, 0
        if tokens > max_tokens:
            units.extend(_split_chars(text, word.span(), max_tokens, count, opens and not units))
            continue
        if first < 0:
            first = word.start()
        last, used = word.end(), used + tokens
    if first >= 0:
        units.append(_Unit(first, last, used, opens and not units))
    return units


def _split_chars(
    text: str, span: tuple[int, int], max_tokens: int, count: Callable[[str], int], opens: bool
) -> list[_Unit]:
    """Cuts one giant "word" (a run of CJK text, a data blob) into pieces that fit, guessing
    each piece's length from the characters-per-token seen so far and shrinking until it fits."""
    units: list[_Unit] = []
    start, end_of_word = span
    chars_per_token = 4.0
    while start < end_of_word:
        end = min(end_of_word, start + max(1, int(max_tokens * chars_per_token)))
        tokens = count(text[start:end])
        while tokens > max_tokens and end - start > 1:
            end = start + max(1, (end - start) * max_tokens // (tokens + 1))
            tokens = count(text[start:end])
        units.append(_Unit(start, end, tokens, opens and not units))
        chars_per_token = max(1.0, (end - start) / max(tokens, 1))
        start = end
    return units
