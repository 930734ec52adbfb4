"""The extractive generator: no language model, a cited digest of the best evidence sentences.

The evidence texts are split into sentences; the text encoder scores each against the question
(cosine of unit vectors); the best few (at least ``min_similarity`` and half the best one's
cosine, near-copies skipped) are
quoted verbatim, each followed by its ``[n]``, grouped by evidence item in rank order and in
document order within an item. It only ever quotes: a sentence that reads as an instruction is a
sentence like any other, chosen or not by its similarity to the question, and never changes what
the generator does. This is the offline default.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import numpy as np

from mrag.errors import ConfigError
from mrag.generate.base import Generation

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from mrag.generate.prompt import Prompt

log = logging.getLogger(__name__)

#: The default text encoder: the packaged MiniLM, real weights with no network.
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2-packaged"

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|\n\s*\n|\n(?=\s*[-*•]\s)")
_WORD = re.compile(r"\w+")


def split_sentences(text: str, *, max_chars: int = 400) -> list[str]:
    """Sentences of ``text`` (on ``.!?`` followed by space, blank lines and list bullets),
    white space collapsed, fragments of fewer than three words dropped, long ones cut at a word
    boundary to ``max_chars`` with an ellipsis."""
    out = []
    for raw in _SENTENCE_END.split(text):
        sentence = " ".join(raw.split()).lstrip("-*• ")
        if len(_WORD.findall(sentence)) < 3:
            continue
        if len(sentence) > max_chars:
            sentence = sentence[:max_chars].rsplit(" ", 1)[0] + " …"
        out.append(sentence)
    return out


class ExtractiveGenerator:
    """Quotes the evidence sentences most similar to the question, each with its ``[n]``.

    Args:
        embed: texts → (N, D) vectors (unit or not; they are normalised here) for evidence
            sentences; ``None`` loads the packaged MiniLM (:data:`DEFAULT_EMBEDDER`).
        embed_query: the same for the question, for encoders with a query prompt (defaults to
            ``embed``; with the default encoder, its query route).
        max_sentences: most sentences in the digest.
        min_similarity: a sentence below this cosine is not quoted (the best one always is, so
            an answer never comes back empty when there is text evidence).
        relative_similarity: nor is one below this share of the best sentence's cosine (keeps
            a sharp answer from trailing off into loosely related sentences).
        max_candidates: sentences scored at most, in evidence order (bounds the encoder's work).
        duplicate_cosine: a sentence this close to one already chosen is skipped.
    """

    name = "extractive"
    accepts_images = False

    def __init__(
        self,
        embed: Callable[[list[str]], np.ndarray] | None = None,
        *,
        embed_query: Callable[[list[str]], np.ndarray] | None = None,
        max_sentences: int = 4,
        min_similarity: float = 0.2,
        relative_similarity: float = 0.5,
        max_candidates: int = 256,
        duplicate_cosine: float = 0.95,
    ) -> None:
        if max_sentences < 1:
            raise ConfigError(f"max_sentences must be >= 1, got {max_sentences}")
        if max_candidates < 1:
            raise ConfigError(f"max_candidates must be >= 1, got {max_candidates}")
        if embed is None:
            from mrag.embed.text import HFTextEmbedder
            from mrag.models import get_model_spec

            encoder = HFTextEmbedder(get_model_spec(DEFAULT_EMBEDDER))
            embed, embed_query = encoder.embed_texts, embed_query or encoder.embed_queries
        self.embed = embed
        self.embed_query = embed_query or embed
        self.max_sentences = max_sentences
        self.min_similarity = min_similarity
        self.relative_similarity = relative_similarity
        self.max_candidates = max_candidates
        self.duplicate_cosine = duplicate_cosine

    def generate(self, prompt: Prompt) -> Generation:
        """The digest as deltas: one sentence and its citation per delta.

        Raises:
            ValueError: the prompt carries no question (a prompt from raw chat messages: the
                extractive generator needs :func:`~mrag.generate.build_prompt`'s structure).
        """
        if not prompt.question:
            raise ValueError(
                "the extractive generator needs a prompt from build_prompt (question and "
                "evidence), not one from raw chat messages"
            )
        generation = Generation(iter(self._digest(prompt)))
        generation.finish_reason = "stop"
        return generation

    def select(self, prompt: Prompt) -> list[tuple[int, str, float]]:
        """(evidence n, sentence, cosine) of the chosen sentences, in digest order."""
        candidates: list[tuple[int, int, int, str]] = []  # (rank, n, position, sentence)
        seen: set[str] = set()
        for rank, item in enumerate(prompt.evidence):
            for position, sentence in enumerate(split_sentences(item.text or "")):
                key = sentence.casefold()
                if key not in seen and len(candidates) < self.max_candidates:
                    seen.add(key)
                    candidates.append((rank, item.n, position, sentence))
        if not candidates:
            return []
        sentences = [c[3] for c in candidates]
        vectors, scores = self.similarities(prompt.question, sentences)
        chosen = self.choose(scores, self.max_sentences, vectors=vectors)
        chosen.sort(key=lambda i: (candidates[i][0], candidates[i][2]))
        return [(candidates[i][1], candidates[i][3], float(scores[i])) for i in chosen]

    def similarities(
        self, question: str, sentences: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(unit sentence vectors (N, D), their cosines to ``question`` (N,)) under the encoder;
        the condensing step (:func:`mrag.generate.condense.condense`) scores sentences with
        this too."""
        vectors = _unit(np.asarray(self.embed(list(sentences)), dtype=np.float32))
        query = _unit(np.asarray(self.embed_query([question]), dtype=np.float32))[0]
        return vectors, vectors @ query

    def choose(
        self,
        scores: np.ndarray,
        limit: int,
        *,
        vectors: np.ndarray | None = None,
        min_similarity: float | None = None,
        relative_similarity: float | None = None,
    ) -> list[int]:
        """Indices of the sentences to keep, best first: the best always, then those at or above
        ``min_similarity`` and ``relative_similarity`` of the best (this generator's, unless
        given), up to ``limit``, skipping near-copies (cosine >= ``duplicate_cosine`` to one
        kept) when ``vectors`` are given."""
        absolute = self.min_similarity if min_similarity is None else min_similarity
        relative = self.relative_similarity if relative_similarity is None else relative_similarity
        order = np.argsort(-scores, kind="stable")
        floor = max(absolute, relative * float(scores[order[0]]))
        chosen: list[int] = []
        for i in order:
            if len(chosen) == limit:
                break
            if chosen and scores[i] < floor:
                break
            if vectors is not None and any(
                float(vectors[i] @ vectors[j]) >= self.duplicate_cosine for j in chosen
            ):
                continue
            chosen.append(int(i))
        return chosen

    def _digest(self, prompt: Prompt) -> Iterator[str]:
        if not prompt.evidence:
            yield "No evidence was found for this question."
            return
        chosen = self.select(prompt)
        if not chosen:
            refs = ", ".join(item.citation() for item in prompt.evidence)
            yield f"The evidence has no text to quote; see {refs}."
            return
        for i, (n, sentence, _score) in enumerate(chosen):
            yield ("" if i == 0 else " ") + f"{sentence} [{n}]"


def _unit(rows: np.ndarray) -> np.ndarray:
    if rows.ndim != 2:
        raise ValueError(f"the embedder must return a 2-d array, got shape {rows.shape}")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms == 0, 1, norms)
