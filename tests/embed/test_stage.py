"""The ingest job's embed stage: every embedding space of a row, from one actor."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mrag.config import IngestConfig
from mrag.embed.stage import EmbedStage
from mrag.embed.text import TextEmbedStage
from mrag.models import get_model_spec

CLIP = get_model_spec("tiny-clip-random")
TEXT = get_model_spec("all-MiniLM-L6-v2-packaged")


def _rows() -> pa.Table:
    side = CLIP.image_size
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return pa.table(
        {
            "modality": ["image", "text", "text"],
            "text": [None, "bread recipe", "unreadable"],
            "pixels": [pixels.tobytes(), b"", b""],
            "error_class": ["", "", "BinaryContent"],
        }
    )


def test_image_and_text_rows_get_every_space_they_belong_to() -> None:
    out = EmbedStage(CLIP, TEXT, IngestConfig(torch_threads=1))(_rows())
    clip, text_vec = out["clip"].to_pylist(), out["text_vec"].to_pylist()
    assert [v is not None for v in clip] == [True, True, False]
    assert [v is not None for v in text_vec] == [False, True, False]
    assert len(clip[0]) == CLIP.embed_dim and len(text_vec[1]) == TEXT.embed_dim
    assert "pixels" not in out.column_names  # dropped once embedded: not written, not shipped
    assert out["text_model"].to_pylist() == [None, TEXT.name, None]


def test_text_vectors_match_the_text_stage_on_its_own() -> None:
    fused = EmbedStage(CLIP, TEXT, IngestConfig(torch_threads=1))(_rows())
    alone = TextEmbedStage(TEXT, IngestConfig(torch_threads=1))(_rows())
    np.testing.assert_allclose(
        fused["text_vec"].to_pylist()[1], alone["text_vec"].to_pylist()[1], atol=1e-6
    )


def test_image_only_jobs_never_load_the_text_encoder() -> None:
    stage = EmbedStage(CLIP, None, IngestConfig(torch_threads=1))
    out = stage(_rows())
    assert "text_vec" not in out.column_names
    assert [type(s).__name__ for s in stage.stages] == ["ClipEmbedStage"]
