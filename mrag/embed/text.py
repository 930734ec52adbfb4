"""Transformers text encoder (MiniLM, BGE, E5…): pooled, L2-normalised sentence vectors.

``HFTextEmbedder`` is the in-process model; ``TextEmbedStage`` wraps it as a Ray Data callable
class that fills the ``text_vec`` column of chunk rows. Query/passage prefixes and the pooling
rule come from the :class:`~mrag.models.ModelSpec`, never from the model's name.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from mrag.embed.clip import pick_device, torch_dtype, vector_column
from mrag.models import ModelSpec, resolve_weights

if TYPE_CHECKING:
    import pyarrow as pa

    from mrag.config import IngestConfig


class HFTextEmbedder:
    """A transformers encoder ready for inference.

    Batches are formed from length-sorted inputs (less padding, noticeably faster on CPU) and
    results are returned in the caller's order.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        weights: str = "",
        device: str = "cpu",
        dtype: str = "auto",
        batch_size: int = 64,
        num_threads: int = 0,
        max_length: int = 256,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        resolved = resolve_weights(spec, weights)
        if resolved.path is None:
            raise ValueError(f"text model {spec.name} has no weights to load")
        source = str(resolved.path)
        self.spec = spec
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        model = AutoModel.from_pretrained(source, local_files_only=True)
        self.model = model.eval().to(device=self.device, dtype=torch_dtype(dtype, device))

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Passages → (N, D) float32 unit vectors (applies the spec's passage prefix)."""
        return self._embed([self.spec.passage_prefix + t for t in texts])

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Queries → (N, D) float32 unit vectors (applies the spec's query prefix)."""
        return self._embed([self.spec.query_prefix + t for t in texts])

    def _embed(self, texts: list[str]) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.embed_dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                index = order[start : start + self.batch_size]
                encoded = self.tokenizer(
                    [texts[i] for i in index],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                if self.device.type == "cuda":
                    encoded = {k: v.pin_memory().to(self.device, non_blocking=True)
                               for k, v in encoded.items()}  # fmt: skip
                hidden = self.model(**encoded).last_hidden_state.float()
                if self.spec.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = encoded["attention_mask"].unsqueeze(-1).float()
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[index] = pooled.cpu().numpy()
        return out


class TextEmbedStage:
    """Ray Data callable class: fills ``text_vec`` for good ``text`` rows (null elsewhere)."""

    def __init__(self, spec: ModelSpec, ingest: IngestConfig, weights: str = "") -> None:
        self.embedder = HFTextEmbedder(
            spec,
            weights=weights,
            device=pick_device(ingest.embed_num_gpus),
            dtype=ingest.dtype,
            batch_size=ingest.embed_batch_size,
            num_threads=ingest.torch_threads or os.cpu_count() or 1,
        )

    def __call__(self, rows: pa.Table) -> pa.Table:
        import pyarrow as pa

        errors = rows["error_class"].to_pylist()
        texts = rows["text"].to_pylist()
        modalities = rows["modality"].to_pylist()
        todo = [i for i, e in enumerate(errors) if not e and modalities[i] == "text" and texts[i]]
        vectors = np.zeros((rows.num_rows, self.embedder.embed_dim), dtype=np.float32)
        if todo:
            vectors[todo] = self.embedder.embed_texts([texts[i] for i in todo])
        valid = np.zeros(rows.num_rows, dtype=bool)
        valid[todo] = True
        model = [self.embedder.spec.name if v else None for v in valid]
        return rows.append_column("text_vec", vector_column(vectors, valid)).append_column(
            "text_model", pa.array(model, pa.string())
        )
