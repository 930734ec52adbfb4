"""Image decoding: bytes → model-ready RGB pixels plus a display thumbnail.

CLIP preprocessing (resize the short side, centre-crop) happens here, on cheap CPU tasks, so the
embedding actors only normalise and run the forward pass. JPEGs are decoded at reduced scale with
``Image.draft`` when the target is much smaller than the source, which makes decoding of large
photos several times cheaper.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from mrag.errors import DecodeError

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
    data: bytes, *, image_size: int, max_pixels: int, thumbnail_px: int
) -> DecodedImage:
    """Decodes one image; every failure is a :class:`DecodeError` with a specific ``error_class``.

    Handles EXIF orientation, palette/grayscale/RGBA/CMYK/16-bit modes (alpha is composited on
    white) and refuses images whose header declares more than ``max_pixels`` pixels.
    """
    if not data:
        raise DecodeError("object is empty (0 bytes)", error_class="EmptyObject")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise DecodeError(
                    f"image declares {width}x{height} = {width * height} pixels, over the "
                    f"max_image_pixels limit of {max_pixels} (possible decompression bomb)",
                    error_class="DecompressionBombError",
                )
            if img.format == "JPEG":
                img.draft("RGB", (max(image_size, thumbnail_px) * 2,) * 2)
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
    pixels = np.asarray(
        ImageOps.fit(rgb, (image_size, image_size), Image.Resampling.BICUBIC), dtype=np.uint8
    )
    return DecodedImage(pixels, _thumbnail(rgb, thumbnail_px), rgb.width, rgb.height)


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


def _thumbnail(rgb: Image.Image, thumbnail_px: int) -> bytes:
    thumb = rgb.copy()
    thumb.thumbnail((thumbnail_px, thumbnail_px), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=80)
    return out.getvalue()
