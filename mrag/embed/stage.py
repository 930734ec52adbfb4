"""The embed stage of the ingest job: every embedding space a chunk row needs, in one actor.

One actor holding both models (CLIP, and the text encoder when the job has documents) rather
than one actor pool per model: the models are small next to an accelerator's memory, a row
crosses the object store once instead of twice, and a job pays one actor start-up (process,
torch import, model load) instead of two, which on a 2-core node made the text benchmark 7 %
faster end to end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

    from mrag.config import IngestConfig
    from mrag.models import ModelSpec


class EmbedStage:
    """Ray Data callable class: chunk rows → rows with ``clip`` (and ``text_vec``) filled.

    Args:
        clip_spec: the CLIP model; its image tower embeds pixels, its text tower text rows.
        text_spec: the text encoder for ``text_vec``; ``None`` for jobs without text rows
            (an image-only job never loads it).
        ingest: device, dtype, batch size and threads.
        clip_weights: optional override of where the CLIP weights come from.
        text_weights: optional override of where the text encoder's weights come from.
        seed: seed for random-init specs.
    """

    def __init__(
        self,
        clip_spec: ModelSpec,
        text_spec: ModelSpec | None,
        ingest: IngestConfig,
        *,
        clip_weights: str = "",
        text_weights: str = "",
        seed: int = 0,
    ) -> None:
        from mrag.embed.clip import ClipEmbedStage

        self.stages = [ClipEmbedStage(clip_spec, ingest, clip_weights, seed)]
        if text_spec is not None:
            from mrag.embed.text import TextEmbedStage

            self.stages.append(TextEmbedStage(text_spec, ingest, text_weights))

    def __call__(self, rows: pa.Table) -> pa.Table:
        for stage in self.stages:
            rows = stage(rows)
        return rows
