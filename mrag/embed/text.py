"""Sentence-transformers text encoder (MiniLM, BGE, E5…): pooled, L2-normalised sentence vectors.

``HFTextEmbedder`` is the in-process model; ``TextEmbedStage`` wraps it as a Ray Data callable
class that fills the ``text_vec`` column of chunk rows.

What a checkpoint carries is read from the checkpoint, by sentence-transformers itself:

- **Pooling and normalisation**: ``modules.json`` with ``1_Pooling/config.json`` (CLS, mean…) and
  ``2_Normalize``. A plain transformers checkpoint (no ``modules.json``) gets mean pooling over
  the non-padding tokens. Vectors always leave L2-normalised: the :class:`~mrag.embed.Embedder`
  protocol promises unit vectors (a no-op after a checkpoint's own ``Normalize``).
- **Query/passage prompts**: the ``prompts`` of ``config_sentence_transformers.json`` (``query``;
  ``document``, ``passage`` or ``corpus`` for passages). A checkpoint without them uses the
  spec's ``query_prefix`` / ``passage_prefix`` (E5's and BGE's published checkpoints carry none).
- **Sequence length**: the checkpoint's ``max_seq_length`` (``sentence_bert_config.json``), capped
  at ``max_length``.

Why sentence-transformers rather than a hand-written transformers forward: measured on 2 shared
CPU cores, best of 3 runs, fp32, packaged all-MiniLM-L6-v2, 512 passages of ~150 words of English
prose (224 tokens on average, 214 of them cut at 256), both length-sorted into batches:

====================================  =================  =================
encoder                               batch 32           batch 64
====================================  =================  =================
transformers forward + own pooling    29.6 passages/s    29.5 passages/s
``SentenceTransformer.encode``        29.2 passages/s    29.9 passages/s
====================================  =================  =================

Per-passage cosine between the two: >= 0.9999999 (max abs difference 3e-8). Same speed, so the
library that reads the checkpoint's own pooling, normalisation and prompts is the model here. Its
one cost: ``import sentence_transformers`` adds 2.3-4.5 s per process (it imports scikit-learn and
scipy), paid once per actor or replica.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from mrag.embed.clip import torch_dtype
from mrag.errors import ConfigError
from mrag.models import ModelSpec, resolve_weights, weights_id

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa
    import torch
    from sentence_transformers import SentenceTransformer

    from mrag.embed import EmbedOptions

log = logging.getLogger(__name__)

#: Prompt names sentence-transformers' ``encode_document`` looks for, in its order.
_PASSAGE_PROMPT_NAMES = ("document", "passage", "corpus")


class HFTextEmbedder:
    """A sentence-transformers encoder ready for inference.

    Batches are formed from length-sorted inputs (less padding, noticeably faster on CPU) and
    results are returned in the caller's order.

    Args:
        spec: which model; ``query_prefix`` / ``passage_prefix`` apply only when the checkpoint
            declares no prompts of its own.
        weights: optional local path or object-storage URI overriding the spec's weights.
        device: ``cpu`` or ``cuda``.
        dtype: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` or ``bf16``.
        batch_size: texts per forward pass.
        num_threads: torch intra-op threads (0 leaves torch's setting alone).
        max_length: token cap per text; the checkpoint's own ``max_seq_length`` wins when lower.

    Raises:
        WeightsNotFoundError: the spec's weights are nowhere to be found.
        ConfigError: the checkpoint's vectors are not ``spec.embed_dim`` wide.
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

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        resolved = resolve_weights(spec, weights)
        if resolved.path is None:
            raise ValueError(f"text model {spec.name} has no weights to load")
        self.spec = spec
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = _load_sentence_transformer(resolved.path, device, torch_dtype(dtype, device))
        checkpoint_max = self.model.max_seq_length
        self.max_length = min(max_length, checkpoint_max) if checkpoint_max else max_length
        self.model.max_seq_length = self.max_length
        self.tokenizer = self.model.tokenizer
        self.query_prompt, self.passage_prompt = _prompts(self.model.prompts, spec)
        width = self.model.get_embedding_dimension()
        if width != spec.embed_dim:
            raise ConfigError(
                f"text model {spec.name}: the checkpoint at {resolved.path} gives {width}-d "
                f"vectors, the spec says embed_dim={spec.embed_dim}"
            )

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Passages → (N, D) float32 unit vectors (with the passage prompt, if any)."""
        return self._embed(texts, query=False)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        """Queries → (N, D) float32 unit vectors (with the query prompt, if any)."""
        return self._embed(texts, query=True)

    def _embed(self, texts: list[str], *, query: bool) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        # encode_query / encode_document also pick the query or document route of asymmetric
        # checkpoints; the prompt is always passed explicitly ("" for none) so that a
        # checkpoint's default_prompt_name cannot put a query prompt on passages.
        encode = self.model.encode_query if query else self.model.encode_document
        with torch.inference_mode():
            vectors = encode(
                texts,
                prompt=self.query_prompt if query else self.passage_prompt,
                batch_size=self.batch_size,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return vectors.float().cpu().numpy()


def _load_sentence_transformer(path: Path, device: str, dtype: torch.dtype) -> SentenceTransformer:
    """The checkpoint as sentence-transformers modules; plain checkpoints get mean pooling."""
    try:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import (
            Normalize,
            Pooling,
            Transformer,
        )
    except ImportError as exc:  # pragma: no cover - a runtime dependency of mrag
        raise ImportError(
            "the text encoder needs sentence-transformers: pip install sentence-transformers==6.2.0"
        ) from exc
    from transformers.utils import logging as transformers_logging

    # transformers 5 draws a "Loading weights" progress bar on stderr for every model load:
    # noise in CLI output, job logs and notebooks.
    transformers_logging.disable_progress_bar()
    model_kwargs = {"dtype": dtype}
    if (path / "modules.json").is_file():
        return SentenceTransformer(
            str(path), device=device, local_files_only=True, model_kwargs=model_kwargs
        )
    log.info("%s has no sentence-transformers modules.json: mean pooling + L2 norm", path)
    transformer = Transformer(str(path), model_kwargs=model_kwargs)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    return SentenceTransformer(modules=[transformer, pooling, Normalize()], device=device)


def _prompts(checkpoint_prompts: dict[str, str], spec: ModelSpec) -> tuple[str, str]:
    """(query prompt, passage prompt): the checkpoint's where it has one, else the spec's."""
    query = checkpoint_prompts.get("query") or ""
    passage = next((checkpoint_prompts[n] for n in _PASSAGE_PROMPT_NAMES
                    if checkpoint_prompts.get(n)), "")  # fmt: skip
    for kind, ours, theirs in (
        ("query", spec.query_prefix, query),
        ("passage", spec.passage_prefix, passage),
    ):
        if ours and theirs and ours != theirs:
            log.warning(
                "%s: the checkpoint's %s prompt %r overrides the spec's %r",
                spec.name,
                kind,
                theirs,
                ours,
            )
    return query or spec.query_prefix, passage or spec.passage_prefix


def with_context(text: str, context: str | None) -> str:
    """What the text encoder embeds for a chunk: its context (document title, section heading)
    on a line before the chunk's own text, so a window deep in a page still says what it is
    about."""
    return f"{context}\n{text}" if context else text


class TextSpaceEmbedder:
    """The ``text_vec`` space (:class:`mrag.embed.SpaceEmbedder`): chunk text with its context
    (title, section) as passages, and queries with the model's query prompt. Rows without text
    (a recording with no speech in it) get no vector."""

    def __init__(self, spec: ModelSpec, options: EmbedOptions) -> None:
        self.spec = spec
        self.embedder = HFTextEmbedder(
            spec,
            weights=options.weights,
            device=options.device,
            dtype=options.dtype,
            batch_size=options.batch_size,
            num_threads=options.num_threads,
        )
        self.embed_dim = spec.embed_dim
        self.weights_id = weights_id(spec, options.weights)

    def embed_rows(self, rows: pa.Table, candidates: list[int]) -> tuple[list[int], np.ndarray]:
        texts = rows["text"].to_pylist()
        contexts = rows["context"].to_pylist() if "context" in rows.column_names else None
        todo = [i for i in candidates if texts[i] and texts[i].strip()]
        passages = [with_context(texts[i], contexts[i] if contexts else None) for i in todo]
        return todo, self.embedder.embed_texts(passages)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.embedder.embed_queries(texts)
