"""Cross-encoder reranking of text hits: a transformers sequence classifier scores each
(query, passage) pair jointly, which a bi-encoder's one vector per side cannot.

Specs are data in :mod:`mrag.models` (family ``hf_cross_encoder``): the production ones are hub
checkpoints (``cross-encoder/ms-marco-MiniLM-L-6-v2``, ``BAAI/bge-reranker-v2-m3``) resolved by
:func:`mrag.models.resolve_weights`, so missing weights fail with ``WeightsNotFoundError`` and the
ways to provide them. ``tiny-cross-encoder-random`` is a seeded random-init BERT for offline tests
(its ``model_cfg`` holds the ``BertConfig`` and names the spec whose tokenizer it borrows).

Why not ``lancedb.rerankers.CrossEncoderReranker`` (checked with LanceDB 0.40): it does load a
local checkpoint folder offline (``model_name=<folder>``), but it reranks LanceDB query results
(Arrow tables with ``_distance`` / ``_score`` columns, inside ``table.search(...).rerank()``),
not a pool of :class:`~mrag.retrieve.search.Hit` that was fused and deepened outside LanceDB;
it sends every row's ``text`` to the model, so a pool with an image row (``text`` null) fails
with ``ValueError: Unsupported input type: NoneType``, and with the nulls filtered out the
images could only be re-appended, not kept in their slots; it loads through
``sentence_transformers.CrossEncoder`` with ``trust_remote_code=True`` by default, not through
the spec registry and ``resolve_weights`` (no ``WeightsNotFoundError`` naming the ways to
provide weights); and it holds its model per instance, with no process-wide cache. The scoring
itself is a few lines, so they live here, under mrag's rules.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from mrag.errors import ConfigError
from mrag.models import ModelSpec, random_init_parts, resolve_weights
from mrag.rerank.base import TEXT_MODALITIES, RerankQuery, reorder_in_slots

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mrag.hits import Hit

log = logging.getLogger(__name__)


class CrossEncoderReranker:
    """Scores text-bearing hits with a cross-encoder; other hits keep their slots.

    A hit is scored when its modality is in ``modalities`` and its ``text`` is not blank. The
    score is the model's relevance logit (``num_labels == 1``; for two labels, the margin of
    label 1 over label 0). Pairs are batched by length (less padding), ``batch_size`` per
    forward pass, truncated to ``max_length`` tokens (the passage side is cut first).

    The model is loaded once per process per (spec, weights, device, dtype, seed): building a
    second reranker for the same spec costs nothing.

    Args:
        spec: an ``hf_cross_encoder`` spec.
        weights: local folder or object-storage prefix overriding the spec's weights (a
            transformers checkpoint folder: config, tokenizer files and weights).
        device: ``cpu`` or ``cuda``.
        dtype: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` or ``bf16``.
        batch_size: pairs per forward pass.
        max_length: token cap per pair.
        modalities: chunk modalities whose text is scored.
        seed: seed for random-init specs.

    Raises:
        ConfigError: the spec is not an ``hf_cross_encoder``, or the checkpoint is not a
            one- or two-label sequence classifier.
        WeightsNotFoundError: the weights are nowhere to be found.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        weights: str = "",
        device: str = "cpu",
        dtype: str = "auto",
        batch_size: int = 32,
        max_length: int = 512,
        modalities: Sequence[str] = TEXT_MODALITIES,
        seed: int = 0,
    ) -> None:
        if spec.family != "hf_cross_encoder":
            raise ConfigError(f"model {spec.name!r} is a {spec.family} model, not a cross-encoder")
        if batch_size < 1 or max_length < 8:
            raise ConfigError("batch_size must be >= 1 and max_length >= 8")
        self.spec = spec
        self.name = spec.name
        self.batch_size = batch_size
        self.max_length = max_length
        self.modalities = tuple(modalities)
        self.tokenizer, self.model = load_cross_encoder(spec, weights, device, dtype, seed)

    def rerank(self, query: RerankQuery, hits: Sequence[Hit]) -> list[Hit]:
        return self.rerank_many([query], [hits])[0]

    def rerank_many(
        self, queries: Sequence[RerankQuery], pools: Sequence[Sequence[Hit]]
    ) -> list[list[Hit]]:
        """Every scorable pair of every pool in shared, length-sorted batches (what the
        Serve deployment's ``@serve.batch`` hands over: concurrent searches' pools)."""
        pairs: list[tuple[int, int]] = []  # (pool, slot)
        for n, (query, hits) in enumerate(zip(queries, pools, strict=True)):
            if not query.has_text:
                continue  # an image query: nothing for a text model to compare
            pairs += [
                (n, i) for i, hit in enumerate(hits)
                if hit.modality in self.modalities and hit.text and hit.text.strip()
            ]  # fmt: skip
        scores = self.score_pairs(
            [queries[n].text for n, _ in pairs], [pools[n][i].text for n, i in pairs]
        )
        by_pool: list[dict[int, float]] = [{} for _ in pools]
        for (n, i), score in zip(pairs, scores.tolist(), strict=True):
            by_pool[n][i] = score
        return [
            reorder_in_slots(hits, scored) if scored else list(hits)
            for hits, scored in zip(pools, by_pool, strict=True)
        ]

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """Relevance of each passage to ``query``, (N,) float32, higher is better."""
        return self.score_pairs([query] * len(passages), passages)

    def score_pairs(self, queries: Sequence[str], passages: Sequence[str]) -> np.ndarray:
        """Relevance of each (query, passage) pair, (N,) float32, higher is better."""
        import torch

        out = np.zeros(len(passages), dtype=np.float32)
        order = sorted(range(len(passages)), key=lambda i: len(passages[i]))
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                encoded = self.tokenizer(
                    [queries[i] for i in batch],
                    [passages[i] for i in batch],
                    padding=True,
                    truncation="longest_first",
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(device)
                logits = self.model(**encoded).logits.float()
                relevance = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
                out[batch] = relevance.cpu().numpy()
        return out


@functools.cache
def load_cross_encoder(
    spec: ModelSpec, weights: str = "", device: str = "cpu", dtype: str = "auto", seed: int = 0
) -> tuple[Any, Any]:
    """(tokenizer, model in eval mode) for a cross-encoder spec; cached for the process."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    from mrag.embed.clip import torch_dtype

    resolved = resolve_weights(spec, weights)
    torch_type = torch_dtype(dtype, device)
    if resolved.path is None:  # random-init spec: BertConfig + a borrowed tokenizer
        model_config, tokenizer_path = random_init_parts(spec, "BertConfig")
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path), local_files_only=True)
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(BertConfig(**model_config))
        log.warning("cross-encoder %s uses random weights (seed %d)", spec.name, seed)
    else:
        if not resolved.path.is_dir():
            raise ConfigError(
                f"cross-encoder weights must be a transformers checkpoint folder (config.json, "
                f"tokenizer files, weights), got the file {resolved.path}"
            )
        tokenizer = AutoTokenizer.from_pretrained(str(resolved.path), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            str(resolved.path), local_files_only=True, dtype=torch_type
        )
        log.info("cross-encoder %s loaded from %s (%s)", spec.name, resolved.path, resolved.source)
    if model.config.num_labels not in (1, 2):
        raise ConfigError(
            f"cross-encoder {spec.name!r} has {model.config.num_labels} output labels; a "
            "reranker needs 1 (a relevance logit) or 2 (irrelevant, relevant)"
        )
    return tokenizer, model.eval().to(device=device, dtype=torch_type)
