"""Resize rules of the decode tasks: photos as the model was trained, PDF pages whole."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mrag.config import IngestConfig
from mrag.decode.image import decode_image, model_pixels
from mrag.decode.stage import DecodeStage
from mrag.models import ImagePreprocess
from tests.doc_media import text_pdf
from tests.media import encode


def _tall_stripes() -> Image.Image:
    """300x900: red top third, green middle, blue bottom."""
    pixels = np.zeros((900, 300, 3), dtype=np.uint8)
    pixels[:300, :, 0] = pixels[300:600, :, 1] = pixels[600:, :, 2] = 255
    return Image.fromarray(pixels)


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_photo_resize_modes_follow_open_clip(interpolation: str) -> None:
    tall = _tall_stripes()
    shortest = model_pixels(tall, 60, "shortest", interpolation)  # 60x180, centre 60 rows
    assert shortest.shape == (60, 60, 3)
    assert (shortest[:, :, 1] > 200).all() and (shortest[:, :, [0, 2]] < 50).all()
    squash = model_pixels(tall, 60, "squash", interpolation)  # all three bands, squeezed
    assert squash[5, 30, 0] > 200 and squash[30, 30, 1] > 200 and squash[55, 30, 2] > 200
    longest = model_pixels(tall, 60, "longest", interpolation)  # 20x60 centred on black
    assert (longest[:, :19] == 0).all() and (longest[:, 41:] == 0).all()
    assert longest[5, 30, 0] > 200 and longest[55, 30, 2] > 200


def test_decode_image_applies_the_model_resize() -> None:
    data = encode(_tall_stripes(), "PNG")
    limits = {"image_size": 60, "max_pixels": 10_000_000, "thumbnail_px": 32}
    assert (decode_image(data, **limits).pixels[:, :, 1] > 200).all()  # default: centre crop
    squash = decode_image(data, **limits, resize_mode="squash", interpolation="bilinear").pixels
    assert squash[5, 30, 0] > 200 and squash[55, 30, 2] > 200


@pytest.mark.parametrize("resize_mode", ["shortest", "squash"])
def test_pdf_pages_are_letterboxed_on_white_whatever_the_model_resize(
    tmp_path, resize_mode: str
) -> None:
    """A landscape page keeps its whole width (no text column cropped), on white paper."""
    page = Image.new("RGB", (800, 400), (40, 40, 40))
    path = tmp_path / "wide.pdf"
    path.write_bytes(text_pdf([page], media_box=(800, 400)))
    batch = {"uri": [str(path)], "size": [0], "etag": [""], "mtime": [0.0], "fingerprint": ["f"]}
    preprocess = ImagePreprocess(64, resize_mode, "bilinear")
    rows = DecodeStage(IngestConfig(), preprocess=preprocess)(batch)
    assert rows["modality"].to_pylist() == ["pdf_page"]
    pixels = np.frombuffer(rows["pixels"][0].as_py(), np.uint8).reshape(64, 64, 3)
    assert (pixels[:15] == 255).all() and (pixels[49:] == 255).all()  # paper above and below
    assert (pixels[17:47] < 128).all()  # the page, edge to edge


def test_the_stage_needs_a_size() -> None:
    with pytest.raises(ValueError, match="image_size"):
        DecodeStage(IngestConfig())
    assert DecodeStage(IngestConfig(), image_size=64).preprocess == ImagePreprocess(64)
