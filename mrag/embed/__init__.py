"""Embedders: one interface, one factory; models are specs in :mod:`mrag.models`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from mrag.models import ModelSpec


class Embedder(Protocol):
    """Maps a batch of inputs to an (N, embed_dim) float32 array of unit-length vectors."""

    embed_dim: int

    def embed_texts(self, texts: list[str]) -> np.ndarray: ...


class ImageEmbedder(Embedder, Protocol):
    def embed_images(self, pixels: np.ndarray) -> np.ndarray: ...


def create_embedder(
    spec: ModelSpec,
    *,
    weights: str = "",
    device: str = "cpu",
    dtype: str = "auto",
    batch_size: int = 32,
    num_threads: int = 0,
    seed: int = 0,
) -> Embedder:
    """Builds the embedder for a spec's family (``open_clip`` or ``hf_text``)."""
    if spec.family == "open_clip":
        from mrag.embed.clip import ClipEmbedder

        return ClipEmbedder(
            spec,
            weights=weights,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            num_threads=num_threads,
            seed=seed,
        )
    if spec.family == "hf_text":
        from mrag.embed.text import HFTextEmbedder

        return HFTextEmbedder(
            spec,
            weights=weights,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            num_threads=num_threads,
        )
    raise ValueError(f"no embedder for model family {spec.family!r}")
