"""Late-interaction (ColBERT-style MaxSim) reranking over a text encoder's token embeddings.

Each query token is matched with its most similar passage token (cosine of the encoder's
contextual token states) and the passage scores the mean of those maxima. Unlike one pooled
vector per side, every query word has to find support somewhere in the passage, and the match
is made in context: "seasons" in a sports ticket advert and in "what causes the seasons" are
different token states. This uses the packaged all-MiniLM-L6-v2 weights, so it is a meaningful
reranker offline; MiniLM was trained for pooled similarity, not MaxSim, so a real ColBERT
checkpoint would do better (any ``hf_text`` spec works here).

Passage token states are computed per call (a ColBERT index would store them at ingest): one
encoder pass over the pool, which is what a cross-encoder of the same size costs too.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from mrag.errors import ConfigError
from mrag.models import ModelSpec, resolve_weights
from mrag.rerank.base import TEXT_MODALITIES, RerankQuery, reorder_in_slots

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

    from mrag.hits import Hit

log = logging.getLogger(__name__)


class LateInteractionReranker:
    """MaxSim of query tokens against passage tokens; hits without text keep their slots.

    Special tokens ([CLS], [SEP], padding) never take part, and neither do tokens that are only
    punctuation (ColBERT filters them from passages; here from the query too, since MiniLM's
    "?" state matches nothing in particular), so a passage cannot score on commas.

    Args:
        spec: an ``hf_text`` spec whose checkpoint is a transformers encoder folder.
        weights: local folder or object-storage prefix overriding the spec's weights.
        device: ``cpu`` or ``cuda``.
        batch_size: passages per forward pass.
        max_length: token cap per passage (and for the query).
        modalities: chunk modalities whose text is scored.

    Raises:
        ConfigError: the spec is not a text encoder.
        WeightsNotFoundError: the weights are nowhere to be found.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        weights: str = "",
        device: str = "cpu",
        batch_size: int = 32,
        max_length: int = 256,
        modalities: Sequence[str] = TEXT_MODALITIES,
    ) -> None:
        if spec.family != "hf_text":
            raise ConfigError(
                f"late interaction needs a text encoder (hf_text), {spec.name!r} is {spec.family}"
            )
        if batch_size < 1 or max_length < 8:
            raise ConfigError("batch_size must be >= 1 and max_length >= 8")
        self.spec = spec
        self.name = f"maxsim:{spec.name}"
        self.batch_size = batch_size
        self.max_length = max_length
        self.modalities = tuple(modalities)
        self.tokenizer, self.model = load_token_encoder(spec, weights, device)
        import torch

        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        self._punctuation_ids = torch.tensor(
            [i for i, token in enumerate(vocab) if not any(c.isalnum() for c in token)],
            dtype=torch.long,
        )

    def rerank(self, query: RerankQuery, hits: Sequence[Hit]) -> list[Hit]:
        if not query.has_text:
            return list(hits)
        slots = [
            i for i, hit in enumerate(hits)
            if hit.modality in self.modalities and hit.text and hit.text.strip()
        ]  # fmt: skip
        if not slots:
            return list(hits)
        query_tokens = self._query_tokens(query.text)
        if len(query_tokens) == 0:  # a query of punctuation only: nothing to match
            return list(hits)
        scores = self._maxsim(query_tokens, [hits[i].text for i in slots])
        return reorder_in_slots(hits, dict(zip(slots, scores.tolist(), strict=True)))

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        """MaxSim of each passage for ``query``, (N,) float32 in [-1, 1], higher is better."""
        return self._maxsim(self._query_tokens(query), passages)

    def _query_tokens(self, query: str) -> torch.Tensor:
        """(Q, D) unit token states of the query's content tokens."""
        states, mask = self._token_states([query])
        return states[0][mask[0]]

    def _maxsim(self, query_tokens: torch.Tensor, passages: Sequence[str]) -> np.ndarray:
        import torch

        out = np.zeros(len(passages), dtype=np.float32)
        if len(query_tokens) == 0:
            return out
        order = sorted(range(len(passages)), key=lambda i: len(passages[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                states, mask = self._token_states([passages[i] for i in batch])
                similarity = torch.einsum("qd,npd->nqp", query_tokens, states)
                similarity = similarity.masked_fill(~mask[:, None, :], -1.0)
                best = similarity.max(dim=-1).values.mean(dim=-1)  # (N,)
                best[~mask.any(dim=-1)] = -1.0  # a passage of punctuation only
                out[batch] = best.float().cpu().numpy()
        return out

    def _token_states(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, D) unit-length token states and the (N, T) mask of tokens that take part."""
        import torch

        device = next(self.model.parameters()).device
        encoded = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
            return_special_tokens_mask=True,
        )
        special = encoded.pop("special_tokens_mask").bool()
        mask = encoded["attention_mask"].bool() & ~special
        if len(self._punctuation_ids):
            mask &= ~torch.isin(encoded["input_ids"], self._punctuation_ids)
        with torch.inference_mode():
            states = self.model(**encoded.to(device)).last_hidden_state.float()
        return torch.nn.functional.normalize(states, dim=-1), mask.to(device)


@functools.cache
def load_token_encoder(spec: ModelSpec, weights: str = "", device: str = "cpu") -> tuple[Any, Any]:
    """(tokenizer, encoder in eval mode) from a text spec's checkpoint; cached for the process."""
    from transformers import AutoModel, AutoTokenizer

    resolved = resolve_weights(spec, weights)
    if resolved.path is None or not resolved.path.is_dir():
        raise ConfigError(
            f"late interaction needs a transformers checkpoint folder for {spec.name!r}, got "
            f"{resolved.path or 'a random-init spec'}"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(resolved.path), local_files_only=True)
    model = AutoModel.from_pretrained(str(resolved.path), local_files_only=True)
    log.info("token encoder %s loaded from %s (%s)", spec.name, resolved.path, resolved.source)
    return tokenizer, model.eval().to(device)
