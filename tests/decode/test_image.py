from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mrag.config import IngestConfig, object_kind
from mrag.decode.image import decode_image
from mrag.decode.stage import DecodeStage
from mrag.errors import DecodeError
from tests.media import bad_images, encode, good_images, pattern

LIMITS = {"image_size": 64, "max_pixels": 10_000_000, "thumbnail_px": 32}


@pytest.mark.parametrize("name", sorted(good_images()))
def test_every_supported_mode_decodes_to_rgb_model_input(name: str) -> None:
    decoded = decode_image(good_images()[name], **LIMITS)
    assert decoded.pixels.shape == (64, 64, 3)
    assert decoded.pixels.dtype == np.uint8
    thumb = Image.open(io.BytesIO(decoded.thumbnail_jpeg))
    assert thumb.format == "JPEG" and max(thumb.size) <= 32


def test_exif_orientation_is_applied() -> None:
    decoded = decode_image(good_images()["photos/nested/i-rotated.jpeg"], **LIMITS)
    assert (decoded.width_px, decoded.height_px) == (72, 96)  # stored 96x72, shown rotated


def test_alpha_is_composited_on_white_not_black() -> None:
    transparent = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    decoded = decode_image(encode(transparent, "PNG"), **LIMITS)
    assert decoded.pixels.min() == 255


def test_cmyk_colours_survive_conversion() -> None:
    red = Image.new("RGB", (40, 40), (255, 0, 0)).convert("CMYK")
    pixel = decode_image(encode(red, "TIFF"), **LIMITS).pixels[32, 32]
    assert pixel[0] > 200 and pixel[1] < 60 and pixel[2] < 60


@pytest.mark.parametrize("name", sorted(bad_images()))
def test_each_bad_input_class_is_a_typed_decode_error(name: str) -> None:
    data, error_class = bad_images()[name]
    with pytest.raises(DecodeError) as info:
        decode_image(data, **LIMITS)
    assert info.value.error_class == error_class
    assert str(info.value)


def test_pixel_limit_comes_from_config() -> None:
    data = encode(pattern(1, (200, 100)), "PNG")
    decode_image(data, image_size=64, max_pixels=20_000, thumbnail_px=32)
    with pytest.raises(DecodeError, match="max_image_pixels"):
        decode_image(data, image_size=64, max_pixels=19_999, thumbnail_px=32)


def test_stage_turns_bad_objects_into_error_rows_and_keeps_good_ones(tmp_path) -> None:
    files = {**good_images(), **{k: v for k, (v, _) in bad_images().items()}}
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    uris = [str(tmp_path / rel) for rel in files]
    uris.append(str(tmp_path / "photos" / "vanished.jpg"))  # listed, then deleted before reading
    batch = {
        "uri": np.array(uris, dtype=object),
        "size": np.zeros(len(uris), dtype=np.int64),
        "etag": np.array([""] * len(uris), dtype=object),
        "mtime": np.zeros(len(uris)),
        "fingerprint": np.array(["f"] * len(uris), dtype=object),
    }
    rows = DecodeStage(IngestConfig(max_image_pixels=10_000_000), image_size=64)(batch)
    by_uri = dict(zip(rows["uri"].to_pylist(), rows["error_class"].to_pylist(), strict=True))
    for rel in good_images():
        assert by_uri[str(tmp_path / rel)] == ""
    for rel, (_, error_class) in bad_images().items():
        assert by_uri[str(tmp_path / rel)] == error_class
    assert by_uri[uris[-1]] == "FileNotFoundError"
    assert rows.num_rows == len(uris)
    good_pixels = [p for p, e in zip(rows["pixels"].to_pylist(), rows["error_class"].to_pylist(),
                                     strict=True) if not e]  # fmt: skip
    assert all(len(p) == 64 * 64 * 3 for p in good_pixels)
    assert len(set(rows["chunk_id"].to_pylist())) == len(uris)


def test_object_kind_is_by_case_insensitive_extension() -> None:
    exts = IngestConfig().extensions
    assert object_kind("s3://b/X.JPEG", exts) == "image"
    assert object_kind("/a/b/Report.PDF", exts) == "pdf"
    assert object_kind("/a/notes.Md", exts) == "markdown"
    assert object_kind("/a/page.htm", exts) == "html"
    assert object_kind("/a.dir/noext", exts) is None
    assert object_kind("/a/b.docx", exts) is None  # not asked for
    assert object_kind("/a/scan.heic", (".heic",)) == "image"  # a user-added image format
    assert object_kind("/a/notes.txt", (".jpg",)) is None  # listed kinds obey the job's list too


def _jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header is rewritten to declare width×height pixels."""
    data = bytearray(encode(pattern(3, (64, 64)), "JPEG", quality=80))
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_a_camera_sized_jpeg_decodes_at_reduced_scale_within_the_limit() -> None:
    photo = pattern(5, (90, 90)).resize((9000, 9000), Image.Resampling.BILINEAR)
    decoded = decode_image(
        encode(photo, "JPEG", quality=90), **{**LIMITS, "max_pixels": 64_000_000}
    )
    assert (decoded.width_px, decoded.height_px) == (9000, 9000)  # the picture's own size
    assert decoded.pixels.shape == (64, 64, 3)


def test_a_jpeg_declaring_gigapixels_in_a_few_bytes_is_still_a_bomb() -> None:
    # 60000² declared: at 1/8 scale it would decode to 56 MP (under 64 MP), but 3.6 GP in ~1 KB
    # is no photograph.
    bomb = _jpeg_declaring(60_000, 60_000)
    with pytest.raises(DecodeError, match="pixels per byte") as info:
        decode_image(bomb, **{**LIMITS, "max_pixels": 64_000_000})
    assert info.value.error_class == "DecompressionBombError"
    with pytest.raises(DecodeError, match="even at reduced scale"):
        decode_image(_jpeg_declaring(65_000, 65_000), **{**LIMITS, "max_pixels": 60_000_000})


def test_formats_decoded_whole_keep_the_strict_header_limit() -> None:
    data = encode(pattern(1, (300, 300)), "PNG")
    with pytest.raises(DecodeError, match="decoded whole"):
        decode_image(data, **{**LIMITS, "max_pixels": 80_000})
