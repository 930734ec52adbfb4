from __future__ import annotations

import re

import pytest

from mrag.chunk import approximate_tokens, chunk_text

PROSE = (
    "Bees dance to share where flowers are. The dance encodes distance and direction! "
    "Scouts repeat it many times.\n\n"
    "Hives keep a steady temperature in winter. Workers shiver their flight muscles to make heat. "
    "The cluster rotates so no bee stays cold for long.\n\n"
    "Honey is stored in wax cells. It keeps for years because it holds little water."
)


def test_chunks_are_exact_slices_and_cover_the_text() -> None:
    chunks = chunk_text(PROSE, max_tokens=30, overlap_tokens=8)
    assert len(chunks) > 2
    covered = set()
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert PROSE[chunk.char_start : chunk.char_end] == chunk.text
        assert approximate_tokens(chunk.text) <= 30
        covered.update(range(chunk.char_start, chunk.char_end))
    assert all(i in covered for i, ch in enumerate(PROSE) if not ch.isspace())


def test_windows_prefer_paragraph_and_sentence_ends() -> None:
    chunks = chunk_text(PROSE, max_tokens=40, overlap_tokens=0)
    assert chunks[0].text.endswith("Scouts repeat it many times.")
    assert all(re.search(r"[.!?]$", c.text) for c in chunks)


def test_overlap_repeats_whole_sentences() -> None:
    chunks = chunk_text(PROSE, max_tokens=30, overlap_tokens=12)
    overlaps = [a.char_end > b.char_start for a, b in zip(chunks, chunks[1:], strict=False)]
    assert any(overlaps)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.char_start > a.char_start and b.char_end > a.char_end  # always progresses


def test_a_sentence_longer_than_a_window_splits_between_words() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    chunks = chunk_text(text, max_tokens=30, overlap_tokens=0)
    assert len(chunks) == 4
    assert all(not c.text.startswith(" ") and not c.text.endswith(" ") for c in chunks)
    assert " ".join(c.text for c in chunks) == text


def test_small_input_is_one_chunk_and_blank_is_none() -> None:
    assert [c.text for c in chunk_text("  Just one line.  ")] == ["Just one line."]
    assert chunk_text(" \n\n ") == []


def test_a_real_tokenizer_can_measure_length() -> None:
    chunks = chunk_text(
        PROSE, max_tokens=20, overlap_tokens=0, count_tokens=lambda s: 2 * len(s.split())
    )
    assert all(len(c.text.split()) <= 10 for c in chunks)


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        chunk_text(PROSE, max_tokens=10, overlap_tokens=10)
