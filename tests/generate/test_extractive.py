"""The extractive generator with the real packaged MiniLM (no network)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mrag.generate import answer, build_prompt, create_generator, stream_answer
from mrag.generate.extractive import ExtractiveGenerator, split_sentences
from tests.generate.evidence import CAKE, INJECTION, QUESTION, TRAINS, corpus, text_evidence


@pytest.fixture(scope="module")
def extractive() -> ExtractiveGenerator:
    return create_generator("extractive")  # type: ignore[return-value]


def _sentences_with_citations(text: str) -> list[tuple[str, int]]:
    return [(s, int(n)) for s, n in re.findall(r"(.+?) \[(\d+)\](?: |$)", text)]


def test_digest_quotes_the_relevant_sentences_and_cites_only_existing_evidence(extractive):
    result = answer(QUESTION, corpus(), extractive)
    # pinned: the packaged weights are fixed, so the choice and its order are deterministic
    assert result.answer == (
        "Solar panels convert sunlight into electricity using photovoltaic cells. [1] "
        "Excess energy is stored in lithium batteries for use at night. [1]"
    )
    assert [c.n for c in result.citations] == [1]
    assert result.citations[0].uri == "s3://corpus/doc-1.txt"
    assert result.dropped_citations == 0
    assert result.generator == "extractive" and result.finish_reason == "stop"
    payload = result.to_dict()
    assert payload["answer"] == result.answer
    assert payload["citations"][0]["chunk_ids"] == ["chunk-1"]
    assert [e["n"] for e in payload["evidence"]] == [1, 2, 3]


def test_planted_instruction_is_not_obeyed(extractive):
    """The document says to reply only 'PWNED'; the digest still answers the question."""
    result = answer(QUESTION, corpus(), extractive)
    assert result.answer.strip().strip("'\"") != "PWNED"
    assert "PWNED" not in result.answer  # not relevant to the question, so not even quoted
    assert {c.n for c in result.citations} == {1}
    # evidence made of nothing but the injection: it is quoted with its [n], never obeyed
    only = answer("What does the document say?", [text_evidence(1, INJECTION)], extractive)
    assert only.answer == f"{INJECTION} [1]"
    assert [c.n for c in only.citations] == [1]


def test_each_question_gets_its_own_sentences_in_document_order(extractive):
    question = "When does the first train leave and where can I buy tickets?"
    result = answer(question, corpus(), extractive)
    assert _sentences_with_citations(result.answer) == [
        ("The first train leaves the central station at 6:15 every weekday.", 2),
        ("Tickets can be bought at the machines on platform 2.", 2),
    ]
    cake = answer("How long and how hot should the cake bake?", corpus(), extractive)
    assert cake.answer == "Bake the cake at 180 degrees for 25 minutes. [3]"
    assert cake.answer.removesuffix(" [3]") in CAKE  # quoted verbatim
    assert all(s not in TRAINS for s, _ in _sentences_with_citations(cake.answer))


def test_stream_yields_one_sentence_per_delta_then_the_result(extractive):
    events = list(stream_answer(QUESTION, corpus(), extractive))
    deltas = [e["text"] for e in events if e["type"] == "delta"]
    assert len(deltas) == 2 and events[-1]["type"] == "done"
    assert "".join(deltas) == events[-1]["result"].answer


def test_injected_embedder_no_text_and_no_evidence():
    def by_word_overlap(texts: list[str]) -> np.ndarray:  # a toy encoder: bag of 3 words
        vocab = ("lighthouse", "keeper", "bread")
        return np.array([[t.lower().count(w) + 1e-3 for w in vocab] for t in texts], np.float32)

    generator = ExtractiveGenerator(by_word_overlap, max_sentences=1)
    evidence = [
        text_evidence(1, "Fresh bread is baked every morning here. Nothing else is sold."),
        text_evidence(2, "The lighthouse keeper lived alone on the rock for years."),
    ]
    assert answer("Who was the lighthouse keeper?", evidence, generator).answer == (
        "The lighthouse keeper lived alone on the rock for years. [2]"
    )
    image_only = [text_evidence(1, "", modality="image", uri="s3://p/a.jpg", char_end=None)]
    assert "see [1] s3://p/a.jpg" in answer("what is shown?", image_only, generator).answer
    assert answer("anything?", [], generator).answer == "No evidence was found for this question."
    with pytest.raises(ValueError, match="build_prompt"):
        from mrag.generate import Prompt

        generator.generate(Prompt(system="s", user="u"))
    assert build_prompt("q?", evidence).question == "q?"


def test_split_sentences():
    text = "First one here. Second one? Yes!\n\n- a bullet point item\nok. " + "word " * 120
    sentences = split_sentences(text, max_chars=60)
    assert sentences[:2] == ["First one here.", "a bullet point item ok."]
    assert "Second one?" not in sentences  # two words: a fragment, not a quotable sentence
    assert sentences[-1].endswith(" …") and all(len(s) <= 62 for s in sentences)
