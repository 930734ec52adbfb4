"""Embedders: one interface; models are specs in :mod:`mrag.models`.

Implementations: :class:`mrag.embed.clip.ClipEmbedder` (open_clip, images and text in one space)
and :class:`mrag.embed.text.HFTextEmbedder` (sentence-transformers / transformers text encoders).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np


class Embedder(Protocol):
    """Maps a batch of inputs to an (N, embed_dim) float32 array of unit-length vectors."""

    embed_dim: int

    def embed_texts(self, texts: list[str]) -> np.ndarray: ...


class ImageEmbedder(Embedder, Protocol):
    def embed_images(self, pixels: np.ndarray) -> np.ndarray: ...
