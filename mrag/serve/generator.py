"""The generator deployment: evidence in, a streamed cited answer out, with its own resources.

A local LM is the costliest and most GPU-hungry model of the application, and its calls last
seconds, not milliseconds: as its own deployment it scales (and queues, and refuses with 503
past ``max_queued_requests``) independently of the ingress that serves searches. The ingress
calls ``answer`` through a streaming handle (``handle.options(stream=True)``) and relays the
events as they come.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from ray import serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from mrag.config import MragConfig
    from mrag.refine import Evidence

log = logging.getLogger(__name__)


# Pickled by value by Serve: every global its methods use is a module or an importable function.
@serve.deployment(name="Generator")
class GeneratorDeployment:
    """``answer(question, evidence)`` → events: ``{"type": "delta", "text"}``… then
    ``{"type": "done", "answer": {…Answer.to_dict()}}``; ``{"type": "error", "error"}`` if the
    generator fails (an endpoint's HTTP error), possibly after some deltas."""

    def __init__(self, config: MragConfig) -> None:
        import ray

        from mrag.answers import generator_from_config
        from mrag.embed.clip import pick_device
        from mrag.ray_runtime import bind_serve_replica_to_node_address

        bind_serve_replica_to_node_address()  # before Serve starts the replica's gRPC server
        num_gpus = (
            ray.get_runtime_context()
            .get_assigned_resources()
            .get("GPU", config.serve.generator_num_gpus)
        )
        embed = None
        if config.generate.generator == "extractive":
            # The extractive digest picks sentences with the text encoder the corpus was
            # embedded with, loaded here once.
            from mrag.embed.text import HFTextEmbedder
            from mrag.models import get_model_spec

            text = HFTextEmbedder(get_model_spec(config.text_model), weights=config.text_weights)
            embed = text.embed_texts
        self.config = config
        self.generator = generator_from_config(config, embed=embed, device=pick_device(num_gpus))
        self._warm_up()
        log.info("Generator ready (%s)", self.generator.name)

    def _warm_up(self) -> None:
        """One short generation before the replica reports healthy (models' lazy init)."""
        from mrag.generate import answer
        from mrag.refine import Evidence

        item = Evidence(
            n=1, chunk_ids=("warm-up",), asset_id="warm-up", uri="warm-up", modality="text",
            score=1.0, text="A warm-up sentence.",
        )  # fmt: skip
        try:
            answer("warm-up?", [item], self.generator, max_new_tokens=1)
        except Exception:  # noqa: BLE001 - e.g. an endpoint not up yet: the first answer pays
            log.warning("generator warm-up failed", exc_info=True)

    async def answer(
        self, question: str, evidence: list[Evidence]
    ) -> AsyncIterator[dict[str, Any]]:
        from mrag.answers import condense_evidence
        from mrag.errors import MragError
        from mrag.generate import stream_answer

        try:
            evidence = await asyncio.to_thread(
                condense_evidence, self.config, question, evidence, self.generator
            )
        except MragError as exc:
            yield {"type": "error", "error": f"condensing the evidence failed: {exc}"}
            return
        events = stream_answer(
            question, evidence, self.generator, image_budget=self.config.generate.max_images
        )
        done = object()
        try:
            while True:
                # The generator's iteration blocks (a model's forward, an HTTP read): one step
                # at a time in a worker thread keeps this replica's event loop serving others.
                event = await asyncio.to_thread(next, events, done)
                if event is done:
                    return
                if event["type"] == "done":
                    yield {"type": "done", "answer": event["result"].to_dict()}
                else:
                    yield event
        except MragError as exc:  # GenerationError: the endpoint failed, the model refused
            yield {"type": "error", "error": f"the generator failed: {exc}"}
        finally:
            events.close()
