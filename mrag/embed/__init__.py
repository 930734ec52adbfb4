"""Embedders: one interface per embedding space; models are specs in :mod:`mrag.models`.

Each registered space (:mod:`mrag.spaces`) names a :class:`SpaceEmbedder` class that fills its
vector column for the chunk rows it embeds and turns queries into vectors of the same space.
:func:`create_space_embedder` builds one from the space, a model spec and :class:`EmbedOptions`
where it runs (an actor, a Serve replica, a notebook). Implementations:
:class:`mrag.embed.clip.ClipSpaceEmbedder` (open_clip: pixels and text in one space) and
:class:`mrag.embed.text.TextSpaceEmbedder` (a transformers text encoder).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from mrag.models import ModelSpec


class Embedder(Protocol):
    """Maps a batch of inputs to an (N, embed_dim) float32 array of unit-length vectors."""

    embed_dim: int

    def embed_texts(self, texts: list[str]) -> np.ndarray: ...


class ImageEmbedder(Embedder, Protocol):
    def embed_images(self, pixels: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class EmbedOptions:
    """Where and how a space's model runs: small and picklable, shipped to workers.

    Attributes:
        weights: a local path or object-storage URI overriding the spec's weights.
        device: ``cpu`` or ``cuda``.
        dtype: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` or ``bf16``.
        batch_size: inputs per forward pass.
        num_threads: torch intra-op threads (0 leaves torch's setting alone).
        seed: seed of random-init specs.
    """

    weights: str = ""
    device: str = "cpu"
    dtype: str = "auto"
    batch_size: int = 32
    num_threads: int = 0
    seed: int = 0


class SpaceEmbedder(Protocol):
    """Fills one space's vector column and embeds queries into the same space.

    Attributes:
        spec: the model spec (its name is written beside each vector).
        weights_id: what made the vectors (:func:`mrag.models.weights_id`).
        embed_dim: the vectors' width.
    """

    spec: ModelSpec
    weights_id: str
    embed_dim: int

    def embed_rows(self, rows: pa.Table, candidates: list[int]) -> tuple[list[int], np.ndarray]:
        """Vectors for the chunk rows among ``candidates`` (good rows of the modalities the
        space embeds) that have the input it needs: their indices and a (len, D) array."""
        ...

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Text queries → (N, D) unit-length vectors."""
        ...

    def embed_query_images(self, pixels: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 query images → (N, D); only spaces that serve image queries."""
        ...


def create_space_embedder(column: str, spec: ModelSpec, options: EmbedOptions) -> SpaceEmbedder:
    """The space's embedder class (``EmbeddingSpace.embedder``, ``module:Class``), built here."""
    from mrag.spaces import get_space

    module_name, _, class_name = get_space(column).embedder.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(spec, options)
