"""CLIP reranking: exact cosine on stored vectors repairs a quantised first stage."""

from __future__ import annotations

import lancedb
import numpy as np
import pyarrow as pa
import pytest

from mrag.embed.clip import vector_column
from mrag.errors import MragError
from mrag.rerank import RerankQuery, RerankSettings, create_reranker, reranker_from_settings
from mrag.rerank.clip import ClipReranker
from mrag.retrieve.search import Hit
from mrag.vectors import lance_vector_fetcher
from tests.rerank.hits import ids, image_hit, text_hit

DIM = 64


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _near(query: np.ndarray, cosines: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vectors at exactly the given cosines to ``query``."""
    noise = rng.normal(size=(len(cosines), DIM))
    noise -= np.outer(noise @ query, query)
    noise = _unit(noise)
    return (cosines[:, None] * query + np.sqrt(1 - cosines[:, None] ** 2) * noise).astype(
        np.float32
    )


def _quantised(vectors: np.ndarray) -> np.ndarray:
    """A 2-bit scalar quantiser: what a compressed index ranks by, much coarser than PQ."""
    scale = np.abs(vectors).max()
    return np.round(vectors / scale * 2) / 2 * scale


def _chunks_table(tmp_path, chunk_ids, vectors, valid=None):
    db = lancedb.connect(tmp_path / "db")
    rows = pa.table(
        {
            "chunk_id": chunk_ids,
            "modality": ["image"] * len(chunk_ids),
            "clip": vector_column(np.asarray(vectors, dtype=np.float32), valid),
        }
    )
    table = db.create_table("chunks", schema=rows.schema)
    table.add(rows, on_bad_vectors="null")  # null = no vector in this space, as the store writes
    return table


@pytest.fixture
def planted(tmp_path):
    """50 images at cosines 0.70-0.90 to the query; a quantised first stage orders them."""
    rng = np.random.default_rng(7)
    query = _unit(rng.normal(size=DIM))
    cosines = np.linspace(0.90, 0.70, 50)
    vectors = _near(query, cosines, rng)
    chunk_ids = [f"img-{i:02d}" for i in range(50)]  # img-00 is truly the closest
    first_stage = np.argsort(-(_quantised(vectors) @ query), kind="stable")
    hits = [image_hit(chunk_ids[i], float(_quantised(vectors)[i] @ query)) for i in first_stage]
    table = _chunks_table(tmp_path, chunk_ids, vectors)
    return query, hits, table


def test_exact_cosine_repairs_the_order_a_quantised_first_stage_got_wrong(planted):
    query, hits, table = planted
    assert ids(hits)[0] != "img-00"  # the premise: the compressed ranking is wrong at the top
    reranker = create_reranker("clip", vectors=table)

    out = reranker.rerank(RerankQuery(clip_vector=query), hits)

    assert ids(out) == [f"img-{i:02d}" for i in range(50)]
    assert out[0].score == pytest.approx(0.90, abs=1e-5)  # the exact cosine, not the estimate


def test_text_hits_and_hits_without_a_stored_vector_keep_their_slots(tmp_path):
    rng = np.random.default_rng(1)
    query = _unit(rng.normal(size=DIM))
    vectors = _near(query, np.array([0.2, 0.9, 0.5, 0.7]), rng)
    table = _chunks_table(tmp_path, ["far", "close", "null", "mid"], vectors,
                          valid=np.array([True, True, False, True]))  # fmt: skip
    pool = [
        image_hit("far"), text_hit("t", "words"), image_hit("null"), image_hit("gone"),
        image_hit("mid"), image_hit("close"),
    ]  # fmt: skip

    out = ClipReranker(table).rerank(RerankQuery(clip_vector=query), pool)

    assert ids(out) == ["close", "t", "null", "gone", "mid", "far"]
    assert ClipReranker(table).rerank(RerankQuery(clip_vector=query), []) == []
    only_text = [text_hit("t", "words")]
    assert ClipReranker(table).rerank(RerankQuery(), only_text) == only_text


def test_a_text_query_is_embedded_with_the_clip_text_tower(tmp_path):
    from mrag.embed.clip import ClipEmbedder
    from mrag.models import get_model_spec

    embedder = ClipEmbedder(get_model_spec("tiny-clip-random"), seed=0)
    pixels = np.random.default_rng(0).integers(0, 255, size=(6, 64, 64, 3), dtype=np.uint8)
    image_vectors = embedder.embed_images(pixels)
    chunk_ids = [f"img-{i}" for i in range(6)]
    table = _chunks_table(tmp_path, chunk_ids, image_vectors)
    settings = RerankSettings(visual="clip")
    reranker = reranker_from_settings(settings, clip_embedder=embedder, vectors=table)

    out = reranker.rerank(RerankQuery(text="a red bicycle"), [image_hit(c) for c in chunk_ids])

    cosines = image_vectors @ embedder.embed_texts(["a red bicycle"])[0]
    assert ids(out) == [chunk_ids[i] for i in np.argsort(-cosines, kind="stable")]
    from_pixels = reranker.rerank(RerankQuery(pixels=pixels[3]), [image_hit(c) for c in chunk_ids])
    assert ids(from_pixels)[0] == "img-3"  # an image query finds its own picture first


def test_the_fetcher_reads_stored_vectors_by_chunk_id(tmp_path):
    vectors = np.eye(3, DIM, dtype=np.float32)
    fetch = lance_vector_fetcher(_chunks_table(tmp_path, ["a", "b'q", "c"], vectors))
    found = fetch(["b'q", "missing", "a", "a"])
    assert sorted(found) == ["a", "b'q"]  # quotes are escaped, unknown ids left out
    np.testing.assert_array_equal(found["b'q"], vectors[1])


def test_inconsistent_input_fails_with_a_message():
    with pytest.raises(MragError, match="needs the query's clip_vector"):
        ClipReranker({"a": np.ones(DIM)}).rerank(RerankQuery(text="q"), [image_hit("a")])
    with pytest.raises(MragError, match="embedded with another model"):
        ClipReranker({"a": np.ones(8)}).rerank(
            RerankQuery(clip_vector=np.ones(DIM)), [image_hit("a")]
        )
    zero = ClipReranker({"a": np.zeros(DIM), "b": np.ones(DIM)})
    pool = [image_hit("a"), image_hit("b")]
    assert ids(zero.rerank(RerankQuery(clip_vector=np.ones(DIM)), pool)) == ["a", "b"]


def test_hit_type_is_the_retrievers():
    assert isinstance(image_hit("x"), Hit)
