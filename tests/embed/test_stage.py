"""The ingest job's embed stage: every embedding space of a row, from one actor."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mrag.config import IngestConfig
from mrag.embed import EmbedOptions
from mrag.embed.stage import EmbedStage
from mrag.embed.text import TextSpaceEmbedder
from mrag.models import get_model_spec

CLIP = get_model_spec("tiny-clip-random")
TEXT = get_model_spec("all-MiniLM-L6-v2-packaged")
BOTH = {"clip": (CLIP, ""), "text_vec": (TEXT, "")}


def _rows() -> pa.Table:
    side = CLIP.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return pa.table(
        {
            "modality": ["image", "text", "text", "audio_segment", "audio_segment"],
            "text": [None, "bread recipe", "unreadable", "the island cable", ""],
            "pixels": [pixels.tobytes(), b"", b"", b"", b""],
            "error_class": ["", "", "BinaryContent", "", ""],
        }
    )


def test_image_and_text_rows_get_every_space_they_belong_to() -> None:
    out = EmbedStage(BOTH, IngestConfig(torch_threads=1))(_rows())
    clip, text_vec = out["clip"].to_pylist(), out["text_vec"].to_pylist()
    assert [v is not None for v in clip] == [True, True, False, False, False]
    # A transcript gets a text vector; a recording with no speech in it gets none.
    assert [v is not None for v in text_vec] == [False, True, False, True, False]
    assert len(clip[0]) == CLIP.embed_dim and len(text_vec[1]) == TEXT.embed_dim
    assert "pixels" not in out.column_names  # dropped once embedded: not written, not shipped
    # The model and weights columns are set exactly where their vector is.
    assert out["text_model"].to_pylist() == [None, TEXT.name, None, TEXT.name, None]
    assert out["clip_model"].to_pylist() == [CLIP.name, CLIP.name, None, None, None]
    assert out["clip_weights_id"].to_pylist()[:3] == ["random-init seed:0"] * 2 + [None]


def test_text_vectors_match_the_text_stage_on_its_own() -> None:
    fused = EmbedStage(BOTH, IngestConfig(torch_threads=1))(_rows())
    alone = TextSpaceEmbedder(TEXT, EmbedOptions(num_threads=1))
    rows, vectors = alone.embed_rows(_rows(), [1])
    assert rows == [1]
    np.testing.assert_allclose(fused["text_vec"].to_pylist()[1], vectors[0], atol=1e-6)


def test_image_only_jobs_never_load_the_text_encoder() -> None:
    stage = EmbedStage({"clip": (CLIP, "")}, IngestConfig(torch_threads=1))
    out = stage(_rows())
    assert "text_vec" not in out.column_names
    assert [type(e).__name__ for e in stage.embedders.values()] == ["ClipSpaceEmbedder"]


def test_a_segment_with_several_frames_gets_their_pooled_vector() -> None:
    side = CLIP.image_size
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(3)]
    rows = pa.table(
        {
            "modality": ["video_frame"] * 3 + ["video_segment"],
            "text": [None, None, None, "spoken words"],
            "pixels": [f.tobytes() for f in frames] + [b"".join(f.tobytes() for f in frames)],
            "error_class": [""] * 4,
        }
    )
    out = EmbedStage({"clip": (CLIP, "")}, IngestConfig(torch_threads=1))(rows)
    vectors = np.array(out["clip"].to_pylist(), dtype=np.float32)
    mean = vectors[:3].mean(axis=0)
    np.testing.assert_allclose(vectors[3], mean / np.linalg.norm(mean), atol=1e-5)
