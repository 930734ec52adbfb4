"""The decode stage's chunk windows are measured with the text encoder's own tokenizer."""

from __future__ import annotations

import pytest

from mrag.decode import token_counter as _token_counter
from mrag.models import get_model_spec, resolve_weights

SPEC = get_model_spec("all-MiniLM-L6-v2-packaged")
SAMPLES = [
    "Steps for making homemade bread.",
    "Crème brûlée — naïve café, “quoted” and ﬁ ligatures.",
    "東京は日本の首都です。大阪は西にあります。",
    "unbelievably antidisestablishmentarianism tokenisation",
    " ".join(["word"] * 900),  # longer than the encoder's 512-token limit: counted whole
]


@pytest.mark.parametrize("text", SAMPLES)
def test_counts_match_the_transformers_tokenizer(text: str) -> None:
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(str(resolve_weights(SPEC).path))
    expected = len(reference(text, add_special_tokens=False)["input_ids"])
    assert _token_counter(SPEC)(text) == expected


def test_no_text_model_means_the_approximation() -> None:
    assert _token_counter(None) is None
