"""The query encoder deployment: every embedding space's query model, batched across callers.

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
from mrag.spaces import get_space

if TYPE_CHECKING:
    from mrag.config import MragConfig

log = logging.getLogger(__name__)

#: The keys ``user_config`` may carry (``cluster/serve.yaml``), applied live by ``reconfigure``.
USER_CONFIG_KEYS = ("max_batch_size", "batch_wait_timeout_s")


@serve.deployment(name="QueryEncoder")
class QueryEncoder:
    """The query models behind the API, one text or image per call, batched across callers.

    Holds the query encoder of every embedding space the config turns on (:mod:`mrag.spaces`):
    ``encode_text`` turns one text into a vector per asked space (what a hybrid text query
    needs, in one call), ``encode_image`` one image likewise for the spaces that serve image
    queries. Each validates its single input and then queues it on a ``@serve.batch`` method,
    so a bad input fails alone instead of failing its batch-mates.
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

        from mrag.embed import EmbedOptions, create_space_embedder
        from mrag.embed.clip import pick_device

        assigned = ray.get_runtime_context().get_assigned_resources()
        num_cpus = assigned.get("CPU", config.serve.encoder_num_cpus)
        num_gpus = assigned.get("GPU", config.serve.encoder_num_gpus)
        torch.set_num_threads(max(1, math.ceil(num_cpus)))
        self.device = pick_device(num_gpus)
        self.encoders = {
            column: create_space_embedder(
                column,
                get_model_spec(config.space_model(column)),
                EmbedOptions(
                    weights=config.space_weights(column),
                    device=self.device,
                    batch_size=config.serve.encoder_max_batch_size,
                    seed=config.seed,
                ),
            )
            for column in config.active_spaces()
        }
        self.spec = get_model_spec(config.clip_model)
        self._image_shape = (self.spec.image_size, self.spec.image_size, 3)
        self._image_spaces = tuple(c for c in self.encoders if "image" in get_space(c).queries)
        self._stats = {"batches": 0, "largest_batch": 0, "texts": 0, "images": 0, "queries": 0}
        self._set_batching(config.serve.encoder_max_batch_size, config.serve.encoder_batch_wait_s)
        for encoder in self.encoders.values():  # first request should not pay lazy init
            encoder.embed_queries(["warm-up"])
        log.info(
            "QueryEncoder ready: %s on %s, %d torch threads",
            ", ".join(f"{c}={e.spec.name}" for c, e in self.encoders.items()),
            self.device,
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
        for method in (self._embed_text_batch, self._embed_image_batch):
            method.set_max_batch_size(self._max_batch_size)
            method.set_batch_wait_timeout_s(self._batch_wait_timeout_s)

    async def encode_text(
        self, text: str, spaces: tuple[str, ...] | None = None
    ) -> dict[str, list[float]]:
        """One query string → ``{space: unit-length vector}`` for ``spaces`` (default: every
        space this replica holds), in one call and one batch window."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        spaces = self._known(spaces, tuple(self.encoders))
        vectors = await self._embed_text_batch((text, spaces))
        return {space: vector.tolist() for space, vector in vectors.items()}

    async def encode_image(
        self, pixels: np.ndarray, spaces: tuple[str, ...] | None = None
    ) -> dict[str, list[float]]:
        """(1, S, S, 3) or (S, S, 3) uint8 RGB at CLIP's input size → ``{space: vector}`` for
        the spaces that serve image queries."""
        pixels = np.asarray(pixels)
        if pixels.ndim == 4 and pixels.shape[0] == 1:
            pixels = pixels[0]
        if pixels.shape != self._image_shape or pixels.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 pixels of shape {self._image_shape}, got {pixels.dtype} "
                f"{pixels.shape}; decode with mrag.query.decode_query_image"
            )
        spaces = self._known(spaces, self._image_spaces)
        vectors = await self._embed_image_batch((pixels, spaces))
        return {space: vector.tolist() for space, vector in vectors.items()}

    def _known(self, spaces: tuple[str, ...] | None, allowed: tuple[str, ...]) -> tuple[str, ...]:
        if spaces is None:
            return allowed
        unknown = [s for s in spaces if s not in allowed]
        if unknown:
            raise ValueError(f"no query encoder for space {unknown[0]!r}; have {allowed}")
        return tuple(spaces)

    def stats(self) -> dict[str, Any]:
        """Batching settings and counters for this replica (operators, tests)."""
        return {
            **self._stats,
            "max_batch_size": self._max_batch_size,
            "batch_wait_timeout_s": self._batch_wait_timeout_s,
            "device": str(self.device),
        }

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _embed_text_batch(
        self, items: list[tuple[str, tuple[str, ...]]]
    ) -> list[dict[str, np.ndarray]]:
        self._count(len(items), "texts")
        self._stats["queries"] += len(items)
        # A worker thread, so the replica keeps queueing the next batch while this one runs.
        return await asyncio.to_thread(self._per_space, items, "embed_queries")

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _embed_image_batch(
        self, items: list[tuple[np.ndarray, tuple[str, ...]]]
    ) -> list[dict[str, np.ndarray]]:
        self._count(len(items), "images")
        return await asyncio.to_thread(self._per_space, items, "embed_query_images")

    def _per_space(self, items: list[tuple[Any, tuple[str, ...]]], method: str) -> list[dict]:
        """One forward per space over the items that asked for it."""
        out: list[dict[str, np.ndarray]] = [{} for _ in items]
        for space, encoder in self.encoders.items():
            wanted = [i for i, (_, spaces) in enumerate(items) if space in spaces]
            if not wanted:
                continue
            inputs = [items[i][0] for i in wanted]
            batch = np.stack(inputs) if method == "embed_query_images" else inputs
            for i, vector in zip(wanted, getattr(encoder, method)(batch), strict=True):
                out[i][space] = vector
        return out

    def _count(self, size: int, kind: str) -> None:
        self._stats["batches"] += 1
        self._stats[kind] += size
        self._stats["largest_batch"] = max(self._stats["largest_batch"], size)
