"""Test media generated on the fly: every image distinct, every bad-input class represented."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def pattern(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A distinct RGB picture per seed (coloured blocks + noise), so nearest-neighbour is unique."""
    rng = np.random.default_rng(seed)
    w, h = size
    blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    big = np.kron(blocks, np.ones((h // 4 + 1, w // 4 + 1, 1), dtype=np.uint8))[:h, :w]
    noise = rng.integers(-20, 20, big.shape)
    return Image.fromarray(np.clip(big.astype(int) + noise, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def good_images() -> dict[str, bytes]:
    """JPEG, PNG, WebP; grayscale, RGBA, CMYK, palette; upper-case extensions; EXIF-rotated."""
    rotated = pattern(9)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise on display
    return {
        "photos/a.jpg": encode(pattern(1), "JPEG", quality=90),
        "photos/B.JPG": encode(pattern(2), "JPEG", quality=90),
        "photos/c.png": encode(pattern(3), "PNG"),
        "photos/D.PNG": encode(pattern(4), "PNG"),
        "photos/e.webp": encode(pattern(5), "WEBP", quality=90),
        "photos/f-gray.png": encode(pattern(6).convert("L"), "PNG"),
        "photos/g-rgba.png": encode(pattern(7).convert("RGBA"), "PNG"),
        "photos/h-cmyk.jpg": encode(pattern(8).convert("CMYK"), "JPEG", quality=90),
        "photos/nested/i-rotated.jpeg": encode(rotated, "JPEG", exif=exif, quality=90),
        "photos/j-palette.gif": encode(pattern(10).convert("P"), "GIF"),
    }


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares width×height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def bad_images() -> dict[str, tuple[bytes, str]]:
    """Path → (bytes, expected error_class) for each bad-input class."""
    truncated = encode(pattern(11, (400, 300)), "JPEG", quality=95)
    return {
        "photos/empty.jpg": (b"", "EmptyObject"),
        "photos/truncated.jpg": (truncated[: len(truncated) // 3], "TruncatedImage"),
        "photos/not-an-image.png": (
            b"%PDF-1.4 definitely not pixels" * 10,
            "UnidentifiedImageError",
        ),
        "photos/bomb.png": (bomb_png(), "DecompressionBombError"),
    }
