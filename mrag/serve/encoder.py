"""The query encoder deployment: CLIP (text and image) and the text model, batched across callers.

Pickled by value by Serve (the module attribute is the Deployment, not the class), so every global
the methods use is a module or a function importable from a module.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from ray import serve

from mrag.errors import ConfigError
from mrag.models import get_model_spec

if TYPE_CHECKING:
    from mrag.config import MragConfig

log = logging.getLogger(__name__)

#: The keys ``user_config`` may carry (``cluster/serve.yaml``), applied live by ``reconfigure``.
USER_CONFIG_KEYS = ("max_batch_size", "batch_wait_timeout_s")


@serve.deployment(name="QueryEncoder")
class QueryEncoder:
    """The query models behind the API, one text or image per call, batched across callers.

    CLIP embeds texts and images (``encode_text``, ``encode_image``: the ``clip`` space) and the
    text model embeds texts (``encode_query``: ``text_vec``); ``encode_text_spaces`` does both
    for one text in one call (what a hybrid text query needs). Each ``encode_*`` validates its
    single input and then queues it on a ``@serve.batch`` method, so a bad input fails alone
    instead of failing its batch-mates.
    Batch size and wait come from ``config.serve`` (``encoder_max_batch_size``,
    ``encoder_batch_wait_s``) and can be changed live through ``user_config``
    (``{"max_batch_size": 32, "batch_wait_timeout_s": 0.01}``). Note ``serve.batch`` never forms
    batches larger than the deployment's ``max_ongoing_requests``.

    Device and torch threads follow the resources the replica was actually given (a YAML
    ``ray_actor_options`` override included): CUDA when it holds a GPU, and
    ``ceil(num_cpus)`` intra-op threads, because Ray would otherwise cap torch at the
    reservation's integer part.
    """

    def __init__(self, config: MragConfig) -> None:
        import ray
        import torch

        from mrag.ray_runtime import bind_serve_replica_to_node_address

        bind_serve_replica_to_node_address()  # before Serve starts the replica's gRPC server

        from mrag.embed.clip import ClipEmbedder, pick_device
        from mrag.embed.text import HFTextEmbedder

        assigned = ray.get_runtime_context().get_assigned_resources()
        num_cpus = assigned.get("CPU", config.serve.encoder_num_cpus)
        num_gpus = assigned.get("GPU", config.serve.encoder_num_gpus)
        torch.set_num_threads(max(1, math.ceil(num_cpus)))
        self.spec = get_model_spec(config.clip_model)
        self.embedder = ClipEmbedder(
            self.spec,
            weights=config.clip_weights,
            device=pick_device(num_gpus),
            dtype="auto",
            batch_size=config.serve.encoder_max_batch_size,
            seed=config.seed,
        )
        self.text_embedder = HFTextEmbedder(
            get_model_spec(config.text_model),
            weights=config.text_weights,
            device=pick_device(num_gpus),
            batch_size=config.serve.encoder_max_batch_size,
        )
        self._image_shape = (self.spec.image_size, self.spec.image_size, 3)
        self._stats = {"batches": 0, "largest_batch": 0, "texts": 0, "images": 0, "queries": 0}
        self._set_batching(config.serve.encoder_max_batch_size, config.serve.encoder_batch_wait_s)
        self.embedder.embed_texts(["warm-up"])  # first request should not pay lazy init
        self.text_embedder.embed_queries(["warm-up"])
        log.info(
            "QueryEncoder ready: %s on %s, %d torch threads",
            self.spec.name,
            self.embedder.device,
            torch.get_num_threads(),
        )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Live batching changes from ``user_config`` (Serve calls this; no replica restart)."""
        user_config = user_config or {}
        unknown = sorted(set(user_config) - set(USER_CONFIG_KEYS))
        if unknown:
            raise ConfigError(
                f"QueryEncoder user_config: unknown key {unknown[0]!r}; allowed: "
                + ", ".join(USER_CONFIG_KEYS)
            )
        self._set_batching(
            user_config.get("max_batch_size", self._max_batch_size),
            user_config.get("batch_wait_timeout_s", self._batch_wait_timeout_s),
        )

    def _set_batching(self, max_batch_size: int, batch_wait_timeout_s: float) -> None:
        self._max_batch_size = int(max_batch_size)
        self._batch_wait_timeout_s = float(batch_wait_timeout_s)
        # The setters live on the decorated function (one queue per method per process); each
        # replica is its own process, so this is per replica.
        for method in (
            self._embed_text_batch,
            self._embed_image_batch,
            self._embed_query_batch,
            self._embed_text_spaces_batch,
        ):
            method.set_max_batch_size(self._max_batch_size)
            method.set_batch_wait_timeout_s(self._batch_wait_timeout_s)

    async def encode_text(self, text: str) -> list[float]:
        """One query string → its unit-length CLIP vector."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        return (await self._embed_text_batch(text)).tolist()

    async def encode_query(self, text: str) -> list[float]:
        """One query string → its unit-length vector in the text model's space (``text_vec``)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        return (await self._embed_query_batch(text)).tolist()

    async def encode_text_spaces(self, text: str) -> dict[str, list[float]]:
        """One query string → ``{"clip": ..., "text_vec": ...}``: both text encoders in one call,
        so a hybrid query pays one handle round trip and one batch window, not two."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        clip_vector, text_vector = await self._embed_text_spaces_batch(text)
        return {"clip": clip_vector.tolist(), "text_vec": text_vector.tolist()}

    async def encode_image(self, pixels: np.ndarray) -> list[float]:
        """(1, S, S, 3) or (S, S, 3) uint8 RGB at the model's input size → its CLIP vector."""
        pixels = np.asarray(pixels)
        if pixels.ndim == 4 and pixels.shape[0] == 1:
            pixels = pixels[0]
        if pixels.shape != self._image_shape or pixels.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 pixels of shape {self._image_shape}, got {pixels.dtype} "
                f"{pixels.shape}; decode with mrag.query.decode_query_image"
            )
        return (await self._embed_image_batch(pixels)).tolist()

    def stats(self) -> dict[str, Any]:
        """Batching settings and counters for this replica (operators, tests)."""
        return {
            **self._stats,
            "max_batch_size": self._max_batch_size,
            "batch_wait_timeout_s": self._batch_wait_timeout_s,
            "device": str(self.embedder.device),
        }

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _embed_text_batch(self, texts: list[str]) -> list[np.ndarray]:
        self._count(len(texts), "texts")
        # A worker thread, so the replica keeps queueing the next batch while this one runs.
        return list(await asyncio.to_thread(self.embedder.embed_texts, texts))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _embed_query_batch(self, texts: list[str]) -> list[np.ndarray]:
        self._count(len(texts), "queries")
        return list(await asyncio.to_thread(self.text_embedder.embed_queries, texts))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _embed_text_spaces_batch(
        self, texts: list[str]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        self._count(len(texts), "texts")
        self._stats["queries"] += len(texts)

        def both(batch: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
            clip_vectors = self.embedder.embed_texts(batch)
            text_vectors = self.text_embedder.embed_queries(batch)
            return list(zip(clip_vectors, text_vectors, strict=True))

        return await asyncio.to_thread(both, texts)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _embed_image_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        self._count(len(images), "images")
        return list(await asyncio.to_thread(self.embedder.embed_images, np.stack(images)))

    def _count(self, size: int, kind: str) -> None:
        self._stats["batches"] += 1
        self._stats[kind] += size
        self._stats["largest_batch"] = max(self._stats["largest_batch"], size)
