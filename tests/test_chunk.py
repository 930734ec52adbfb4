from __future__ import annotations

import itertools
import random
import re

import pytest

from mrag.chunk import IncrementalChunker, TextChunk, approximate_tokens, chunk_text

PROSE = (
    "Bees dance to share where flowers are. The dance encodes distance and direction! "
    "Scouts repeat it many times.\n\n"
    "Hives keep a steady temperature in winter. Workers shiver their flight muscles to make heat. "
    "The cluster rotates so no bee stays cold for long.\n\n"
    "Honey is stored in wax cells. It keeps for years because it holds little water."
)


def _check_invariants(text: str, chunks: list[TextChunk], max_tokens: int, count=None) -> None:
    """What every caller relies on: exact slices, full coverage, order, progress, no blanks."""
    count = count or approximate_tokens
    covered = bytearray(len(text))
    for i, chunk in enumerate(chunks):
        assert chunk.index == i
        assert text[chunk.char_start : chunk.char_end] == chunk.text
        assert chunk.text.strip() == chunk.text != ""
        assert count(chunk.text) <= max_tokens
        covered[chunk.char_start : chunk.char_end] = b"\x01" * len(chunk.text)
    missed = [ch for ch, hit in zip(text, covered, strict=True) if not hit and not ch.isspace()]
    assert not missed
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.char_start < b.char_start and a.char_end < b.char_end  # always progresses


def test_chunks_are_exact_slices_and_cover_the_text() -> None:
    chunks = chunk_text(PROSE, max_tokens=30, overlap_tokens=8)
    assert len(chunks) > 2
    _check_invariants(PROSE, chunks, 30)


def test_windows_prefer_paragraph_and_sentence_ends() -> None:
    chunks = chunk_text(PROSE, max_tokens=40, overlap_tokens=0)
    # the first paragraph (22 tokens) ends the window though the next sentence would fit
    assert chunks[0].text == PROSE.split("\n\n")[0]
    assert all(re.search(r"[.!?]$", c.text) for c in chunks)
    # with no paragraph break in reach, a window still ends at a sentence end
    one_paragraph = PROSE.replace("\n\n", " ")
    assert all(
        re.search(r"[.!?]$", c.text)
        for c in chunk_text(one_paragraph, max_tokens=25, overlap_tokens=5)
    )


def test_closing_quotes_and_brackets_stay_with_their_sentence() -> None:
    text = 'He said "stop." Then he left (quietly.) She asked: "Why?" Nobody knew.'
    chunks = chunk_text(text, max_tokens=7, overlap_tokens=0)
    assert [c.text for c in chunks] == [
        'He said "stop."',
        "Then he left (quietly.)",
        'She asked: "Why?"',
        "Nobody knew.",
    ]


def test_abbreviations_before_lower_case_words_do_not_end_sentences() -> None:
    text = "Use a lens, e.g. a wide one. Then focus."
    chunks = chunk_text(text, max_tokens=12, overlap_tokens=0)
    assert [c.text for c in chunks] == ["Use a lens, e.g. a wide one.", "Then focus."]


def test_overlap_repeats_whole_sentences_from_the_previous_window() -> None:
    chunks = chunk_text(PROSE, max_tokens=30, overlap_tokens=12)
    _check_invariants(PROSE, chunks, 30)
    overlapping = [(a, b) for a, b in zip(chunks, chunks[1:], strict=False)
                   if a.char_end > b.char_start]  # fmt: skip
    assert overlapping
    for a, b in overlapping:
        repeated = PROSE[b.char_start : a.char_end]
        assert approximate_tokens(repeated) <= 12
        assert re.search(r"[.!?]$", repeated)  # whole sentences, not a ragged cut
        assert b.char_start == 0 or PROSE[b.char_start - 1].isspace()


def test_large_overlap_still_makes_progress_across_paragraphs() -> None:
    chunks = chunk_text(PROSE * 3, max_tokens=30, overlap_tokens=25)
    _check_invariants(PROSE * 3, chunks, 30)


def test_no_overlap_means_disjoint_windows() -> None:
    chunks = chunk_text(PROSE, max_tokens=30, overlap_tokens=0)
    assert all(a.char_end < b.char_start for a, b in zip(chunks, chunks[1:], strict=False))


def test_a_sentence_longer_than_a_window_splits_between_words() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    chunks = chunk_text(text, max_tokens=30, overlap_tokens=0)
    assert len(chunks) == 4
    _check_invariants(text, chunks, 30)
    assert " ".join(c.text for c in chunks) == text


def test_a_word_longer_than_a_window_splits_between_characters() -> None:
    blob = "".join(random.Random(3).choices("abcdef0123456789", k=3000))
    text = f"Checksum follows. {blob} End of file."
    chunks = chunk_text(text, max_tokens=50, overlap_tokens=0)
    _check_invariants(text, chunks, 50)
    assert len(chunks) >= approximate_tokens(blob) // 50 + 1
    assert chunks[0].text.startswith("Checksum follows. ") and chunks[-1].text.endswith(
        " End of file."
    )


def test_cjk_text_without_spaces_is_counted_and_split_at_full_stops() -> None:
    sentence = "今天我们在图书馆里读了很多关于火山和地震的书。"  # 23 characters
    assert approximate_tokens(sentence) == 23
    text = sentence * 12
    chunks = chunk_text(text, max_tokens=60, overlap_tokens=0)
    assert [c.text for c in chunks] == [sentence * 2] * 6
    _check_invariants(text, chunks, 60)
    run_on = "火山" * 200  # no punctuation at all
    _check_invariants(run_on, chunk_text(run_on, max_tokens=60, overlap_tokens=10), 60)


def test_small_input_is_one_chunk_and_blank_is_none() -> None:
    assert [(c.text, c.char_start) for c in chunk_text("  Just one line.  ")] == [
        ("Just one line.", 2)
    ]
    assert [c.text for c in chunk_text(PROSE)] == [PROSE]
    assert chunk_text(" \n\n ") == []
    assert chunk_text("") == []


def test_a_custom_counter_sets_the_window() -> None:
    chunks = chunk_text(
        PROSE, max_tokens=20, overlap_tokens=0, count_tokens=lambda s: 2 * len(s.split())
    )
    assert all(len(c.text.split()) <= 10 for c in chunks)


def test_the_text_encoders_own_tokenizer_bounds_every_window() -> None:
    from tokenizers import Tokenizer

    from mrag.models import get_model_spec, resolve_weights

    path = resolve_weights(get_model_spec("all-MiniLM-L6-v2-packaged")).path
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads every encoding to 128
    tokenizer.no_truncation()

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    text = (PROSE + "\n\nPhotosynthesis-dependent chlorophyllous ecosystems—unquestionably! ") * 4
    chunks = chunk_text(text, max_tokens=40, overlap_tokens=10, count_tokens=count)
    _check_invariants(text, chunks, 40, count)
    assert max(count(c.text) for c in chunks) > 30  # windows are filled, not timid


def _random_document(rng: random.Random) -> str:
    words = ["bee", "hive", "honey", "wax", "pollen", "Queen", "e.g.", "(note)", '"quote."',
             "x" * rng.randint(20, 400), "火山", "—", "3.14", "end."]  # fmt: skip
    paragraphs = []
    for _ in range(rng.randint(1, 6)):
        sentences = [" ".join(rng.choices(words, k=rng.randint(1, 40))) + rng.choice(".!?")
                     for _ in range(rng.randint(1, 8))]  # fmt: skip
        paragraphs.append(rng.choice([" ", "  ", "\n"]).join(sentences))
    return rng.choice(["", "  ", "\n"]) + rng.choice(["\n\n", "\n \n\n"]).join(paragraphs)


@pytest.mark.parametrize("seed", range(40))
def test_invariants_hold_on_random_documents(seed: int) -> None:
    rng = random.Random(seed)
    text = _random_document(rng)
    max_tokens = rng.randint(5, 80)
    overlap = rng.randint(0, max_tokens - 1)
    _check_invariants(text, chunk_text(text, max_tokens=max_tokens, overlap_tokens=overlap),
                      max_tokens)  # fmt: skip


def _subword_count(text: str) -> int:
    """A token per 3 non-space characters: like a real tokenizer's, not additive over pieces."""
    return (len("".join(text.split())) + 2) // 3


@pytest.mark.parametrize("seed", range(60))
def test_text_fed_in_pieces_chunks_as_the_whole(seed: int) -> None:
    rng = random.Random(seed)
    text = _random_document(rng) + rng.choice(["", "火山" * rng.randint(50, 400), " "])
    if seed % 3 == 0:
        text = text.replace(" ", "")  # long "words" only: cut between characters
    max_tokens = rng.randint(3, 80)
    settings = {
        "max_tokens": max_tokens,
        "overlap_tokens": rng.randint(0, max_tokens - 1),
        "count_tokens": rng.choice([None, _subword_count]),
    }
    cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(1, 300))))
    chunker = IncrementalChunker(**settings)
    chunks = [c for a, b in itertools.pairwise([0, *cuts]) for c in chunker.chunk(text[a:b])]
    chunks += chunker.chunk(text[cuts[-1] :], final=True)
    assert chunks == chunk_text(text, **settings)


@pytest.mark.parametrize("separator", [" ", ""], ids=["words", "no spaces"])
def test_a_huge_line_is_never_counted_whole(separator: str) -> None:
    """Counting a 40 MB line with a tokenizer took gigabytes: every counted string is at most a
    window's worth of characters, and all of them add up to a few times the text."""
    rng = random.Random(2)
    text = separator.join(rng.choices(["bee", "hive", "honeycomb", "x" * 40], k=300_000))
    counted: list[int] = []

    def count(piece: str) -> int:
        counted.append(len(piece))
        return _subword_count(piece)

    chunks = chunk_text(text, max_tokens=100, overlap_tokens=20, count_tokens=count)
    assert max(counted) <= 100 * 32
    assert sum(counted) < 4 * len(text)
    _check_invariants(text, chunks, 100, _subword_count)


def test_a_tokenizer_that_reads_a_blob_as_one_token_still_gets_bounded_windows() -> None:
    """WordPiece reads any word over 100 characters as one [UNK]: without a length bound, a
    40 MB blob would be one window."""
    blob = "".join(random.Random(4).choices("0123456789abcdef", k=200_000))

    def wordpiece_like(piece: str) -> int:
        return sum(1 if len(word) > 100 else approximate_tokens(word) for word in piece.split())

    chunks = chunk_text(blob, max_tokens=50, overlap_tokens=0, count_tokens=wordpiece_like)
    assert max(len(c.text) for c in chunks) <= 50 * 32
    _check_invariants(blob, chunks, 50, wordpiece_like)


@pytest.mark.parametrize(("max_tokens", "overlap_tokens"), [(10, 10), (10, -1), (0, 0)])
def test_bad_settings_are_rejected(max_tokens: int, overlap_tokens: int) -> None:
    with pytest.raises(ValueError, match="tokens"):
        chunk_text(PROSE, max_tokens=max_tokens, overlap_tokens=overlap_tokens)
