from __future__ import annotations

import numpy as np
import pytest

from mrag.embed.clip import ClipEmbedder, torch_dtype, vector_column
from mrag.models import get_model_spec

SPEC = get_model_spec("tiny-clip-random")


@pytest.fixture(scope="module")
def embedder() -> ClipEmbedder:
    return ClipEmbedder(SPEC, batch_size=3, num_threads=1)


def _pixels(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def test_image_and_text_vectors_are_unit_length_and_batched(embedder) -> None:
    images = embedder.embed_images(_pixels(7))  # 3 + 3 + 1: crosses batch boundaries
    texts = embedder.embed_texts(["a cat", "a dog", "a red square", "x"])
    assert images.shape == (7, SPEC.embed_dim) and texts.shape == (4, SPEC.embed_dim)
    assert images.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_batching_does_not_change_results(embedder) -> None:
    pixels = _pixels(5)
    one_by_one = np.concatenate([embedder.embed_images(pixels[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(embedder.embed_images(pixels), one_by_one, atol=1e-5)


def test_random_init_is_deterministic_for_a_seed() -> None:
    a = ClipEmbedder(SPEC, seed=3).embed_texts(["same"])
    b = ClipEmbedder(SPEC, seed=3).embed_texts(["same"])
    c = ClipEmbedder(SPEC, seed=4).embed_texts(["same"])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_reduced_precision_path_runs_through_the_same_code() -> None:
    import torch

    assert torch_dtype("auto", "cpu") == torch.float32
    assert torch_dtype("auto", "cuda") == torch.float16
    bf16 = ClipEmbedder(SPEC, dtype="bf16").embed_images(_pixels(2))
    fp32 = ClipEmbedder(SPEC, dtype="fp32").embed_images(_pixels(2))
    assert bf16.dtype == np.float32
    assert np.all(np.sum(bf16 * fp32, axis=1) > 0.95)  # same direction, lower precision


def test_rejects_wrong_pixel_shape(embedder) -> None:
    with pytest.raises(ValueError, match="uint8 pixels"):
        embedder.embed_images(np.zeros((2, 64, 64), dtype=np.uint8))


def test_vector_column_is_a_fixed_size_list_with_nulls() -> None:
    import pyarrow as pa

    column = vector_column(np.ones((3, 4), dtype=np.float32), np.array([True, False, True]))
    assert column.type == pa.list_(pa.float32(), 4)
    assert column.null_count == 1 and column[1].as_py() is None


@pytest.mark.gpu
def test_cuda_fp16_matches_cpu() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    gpu = ClipEmbedder(SPEC, device="cuda", dtype="fp16").embed_images(_pixels(4))
    cpu = ClipEmbedder(SPEC).embed_images(_pixels(4))
    assert np.all(np.sum(gpu * cpu, axis=1) > 0.99)


def test_a_checkpoint_of_a_custom_config_loads_and_is_named(tmp_path) -> None:
    """``--clip-weights`` for a spec with its own ``model_cfg`` (not an open_clip name)."""
    import hashlib

    import torch

    seeded = ClipEmbedder(SPEC, seed=5)
    assert seeded.weights_id == "random-init seed:5"
    checkpoint = tmp_path / "tiny.bin"
    torch.save(seeded.model.state_dict(), checkpoint)
    loaded = ClipEmbedder(SPEC, weights=str(checkpoint))  # seed 0, overwritten by the file
    np.testing.assert_allclose(
        loaded.embed_images(_pixels(2)), seeded.embed_images(_pixels(2)), atol=1e-6
    )
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16]
    assert loaded.weights_id == f"local:{checkpoint} sha256:{digest}"


def test_stage_rows_name_the_model_and_weights() -> None:
    import pyarrow as pa

    from mrag.config import IngestConfig
    from mrag.embed.stage import EmbedStage

    stage = EmbedStage({"clip": (SPEC, "")}, IngestConfig(torch_threads=1), seed=2)
    rows = pa.table(
        {
            "error_class": ["", ""],
            "pixels": [_pixels(1).tobytes(), b""],
            "text": [None, "a note"],
            "modality": ["image", "text"],
        }
    )
    out = stage(rows)
    assert out["clip_model"].to_pylist() == [SPEC.name] * 2
    assert out["clip_weights_id"].to_pylist() == ["random-init seed:2"] * 2
