"""Image decoding: bytes → model-ready RGB pixels plus a display thumbnail.

CLIP preprocessing (the resize and crop of open_clip's inference transform, as the model's
:class:`~mrag.models.ImagePreprocess` says) happens here, on cheap CPU tasks, so the embedding
actors only normalise and run the forward pass. JPEGs are decoded at reduced scale with
``Image.draft`` when the target is much smaller than the source, which makes decoding of large
photos several times cheaper.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from mrag.errors import DecodeError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mrag.decode import DecodeContext

# Our own pixel limit (checked from the header, before decoding) replaces Pillow's global one.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # (image_size, image_size, 3) uint8, RGB
    thumbnail_jpeg: bytes
    width_px: int
    height_px: int


def decode_image(
    data: bytes,
    *,
    image_size: int,
    max_pixels: int,
    thumbnail_px: int,
    resize_mode: str = "shortest",
    interpolation: str = "bicubic",
) -> DecodedImage:
    """Decodes one image; every failure is a :class:`DecodeError` with a specific ``error_class``.

    Handles EXIF orientation, palette/grayscale/RGBA/CMYK/16-bit modes (alpha is composited on
    white). The bomb limit applies to the pixels actually decoded: a JPEG is decoded at reduced
    scale (``Image.draft``, down to 1/8 per side) when the model needs far fewer pixels, so a
    200-megapixel phone photo costs a few megapixels; other formats are decoded whole and are
    refused when their header declares more than ``max_pixels`` (see :func:`check_pixel_budget`).
    ``width_px``/``height_px`` are the picture's own size, not the reduced decode's.
    ``resize_mode`` and ``interpolation`` are the model's (see :func:`model_pixels`; the
    defaults are open_clip's, right for OpenAI-style CLIPs such as ViT-B-32).
    """
    if not data:
        raise DecodeError("object is empty (0 bytes)", error_class="EmptyObject")
    try:
        with Image.open(io.BytesIO(data)) as img:
            declared = img.size
            if img.format == "JPEG":
                img.draft("RGB", (max(image_size, thumbnail_px) * 2,) * 2)
            check_pixel_budget(declared, img.size, len(data), max_pixels)
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img.load()
            rgb = _to_rgb(ImageOps.exif_transpose(img))
    except DecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise DecodeError(
            "not a decodable image (unknown or corrupt format)", error_class=type(exc).__name__
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        kind = "TruncatedImage" if "truncated" in str(exc).lower() else type(exc).__name__
        raise DecodeError(f"image could not be decoded: {exc}", error_class=kind) from None
    width_px, height_px = declared
    if (rgb.width > rgb.height) != (img.size[0] > img.size[1]):  # EXIF turned it by 90°
        width_px, height_px = height_px, width_px
    pixels = model_pixels(rgb, image_size, resize_mode, interpolation)
    return DecodedImage(pixels, thumbnail_jpeg(rgb, thumbnail_px), width_px, height_px)


_RESAMPLING = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def model_pixels(
    rgb: Image.Image, size_px: int, resize_mode: str, interpolation: str
) -> np.ndarray:
    """A photo as the image tower's (size_px, size_px, 3) uint8 input: open_clip's inference
    resize and crop, reproduced on PIL so the result matches ``preprocess(img)`` pixel for pixel.

    ``shortest`` is torchvision's ``Resize(size)`` (short side to ``size_px``, long side
    truncated) then ``CenterCrop``: what CLIP models were trained on, and a photo's subject is
    usually central. ``squash`` resizes both sides (SigLIP, PE, CLIPA); ``longest`` resizes the
    long side and pads with black, as open_clip's ``ResizeKeepRatio`` + ``CenterCropOrPad``.
    """
    resample = _RESAMPLING[interpolation]
    if resize_mode == "squash":
        return np.asarray(rgb.resize((size_px, size_px), resample), dtype=np.uint8)
    if resize_mode == "longest":
        return letterbox_pixels(rgb, size_px, interpolation, fill=(0, 0, 0))
    if resize_mode != "shortest":
        raise ValueError(f"unknown resize_mode {resize_mode!r}")
    width, height = rgb.size
    if width <= height:
        new_size = (size_px, int(size_px * height / width))
    else:
        new_size = (int(size_px * width / height), size_px)
    resized = rgb.resize(new_size, resample) if new_size != rgb.size else rgb
    left = int(round((new_size[0] - size_px) / 2.0))
    top = int(round((new_size[1] - size_px) / 2.0))
    return np.asarray(resized.crop((left, top, left + size_px, top + size_px)), dtype=np.uint8)


def letterbox_pixels(
    rgb: Image.Image, size_px: int, interpolation: str, *, fill: tuple[int, int, int]
) -> np.ndarray:
    """The whole picture in a (size_px, size_px, 3) square: long side to ``size_px`` (up or
    down), aspect ratio kept, centred on ``fill``; nothing is cut off."""
    width, height = rgb.size
    scale = size_px / max(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = rgb.resize(new_size, _RESAMPLING[interpolation]) if new_size != rgb.size else rgb
    canvas = Image.new("RGB", (size_px, size_px), fill)
    canvas.paste(resized, ((size_px - new_size[0]) // 2, (size_px - new_size[1]) // 2))
    return np.asarray(canvas, dtype=np.uint8)


#: A JPEG that decodes to more pixels per byte than this is a bomb, not a photo: real photos
#: hold 5-50 pixels per byte (a 9000x9000 camera JPEG of 4 MB: 20), and even a flat colour stays
#: under ~200 in baseline JPEG; progressive "EOB run" tricks declare gigapixels in a few KB.
MAX_JPEG_PIXELS_PER_BYTE = 1_000


def check_pixel_budget(
    declared: tuple[int, int], decoded: tuple[int, int], n_bytes: int, max_pixels: int
) -> None:
    """Refuses an image whose decode would exceed ``max_pixels`` (``DecompressionBombError``).

    ``decoded`` is the size the decoder will really produce (smaller than ``declared`` only for
    a JPEG in draft mode). An image within ``max_pixels`` as declared always passes; a larger one
    passes only when it is decoded at reduced scale within the limit and its declared pixels per
    byte of input look like a photograph, not a bomb.
    """
    declared_px = declared[0] * declared[1]
    if declared_px <= max_pixels:
        return
    decoded_px = decoded[0] * decoded[1]
    detail = (
        f"image declares {declared[0]}x{declared[1]} = {declared_px} pixels, over the "
        f"max_image_pixels limit of {max_pixels}"
    )
    if decoded_px == declared_px:
        reason = "and its format must be decoded whole"
    elif decoded_px > max_pixels:
        reason = f"and even at reduced scale it decodes to {decoded_px} pixels"
    elif declared_px > MAX_JPEG_PIXELS_PER_BYTE * n_bytes:
        reason = (
            f"in only {n_bytes} bytes ({declared_px // max(1, n_bytes)} pixels per byte; photos "
            f"hold under {MAX_JPEG_PIXELS_PER_BYTE})"
        )
    else:
        return
    raise DecodeError(
        f"{detail} {reason} (possible decompression bomb)", error_class="DecompressionBombError"
    )


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(img, dtype=np.float32)
        span = float(values.max() - values.min()) or 1.0
        img = Image.fromarray(((values - values.min()) * (255.0 / span)).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def thumbnail_jpeg(rgb: Image.Image, thumbnail_px: int) -> bytes:
    """The small JPEG stored for display (longer side ``thumbnail_px``), for every modality."""
    thumb = rgb.convert("RGB") if rgb.mode != "RGB" else rgb.copy()
    thumb.thumbnail((thumbnail_px, thumbnail_px), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=80)
    return out.getvalue()


def decode_image_object(source: BinaryIO, context: DecodeContext) -> Iterator[dict[str, Any]]:
    """The image kind's decoder: one ``image`` row with the model's pixels and a thumbnail."""
    preprocess = context.preprocess
    decoded = decode_image(
        source.read(),
        image_size=preprocess.size_px,
        max_pixels=context.ingest.max_image_pixels,
        thumbnail_px=context.ingest.thumbnail_px,
        resize_mode=preprocess.resize_mode,
        interpolation=preprocess.interpolation,
    )
    yield {
        "locator": "image",
        "modality": "image",
        "pixels": decoded.pixels.tobytes(),
        "thumbnail": decoded.thumbnail_jpeg,
        "width_px": decoded.width_px,
        "height_px": decoded.height_px,
    }
