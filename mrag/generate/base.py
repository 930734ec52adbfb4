"""The generator interface: a prompt in, streamed text deltas out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mrag.errors import MragError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mrag.generate.prompt import Prompt


class GenerationError(MragError):
    """A generator could not produce an answer (an endpoint's HTTP error, a bad response).

    Attributes:
        status: the HTTP status for an endpoint's error, else ``None``.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@runtime_checkable
class Generator(Protocol):
    """Writes an answer to a :class:`~mrag.generate.Prompt`, cited with ``[n]``.

    ``generate`` returns an iterator of text deltas: joined, they are the answer. Implementations
    return a :class:`Generation`, which also says, once exhausted, why it stopped and how many
    tokens it used. ``name`` is what an answer records as its generator. A generator that fills
    ``Generation.logprobs`` when a prompt sets ``top_logprobs`` says so with a class attribute
    ``reports_logprobs = True`` (the transformers and openai ones; the LLM reranker needs it).
    """

    name: str
    accepts_images: bool

    def generate(self, prompt: Prompt) -> Iterator[str]: ...


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log-probability, and the most likely tokens at its position.

    Attributes:
        token: the token as text (a byte-level piece may be part of a character).
        logprob: natural log of its probability under the model (before sampling settings).
        top: the ``top_logprobs`` most likely tokens at this position, best first, as
            ``(token, logprob)``; empty when only the chosen token was asked for.
    """

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass
class Usage:
    """Token counts of one generation (``None`` where the generator does not count them)."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Generation:
    """An iterator of text deltas that records how it ended.

    ``finish_reason`` (``stop``: the model ended; ``length``: the token cap), ``usage`` and, when
    the prompt asked for them (``Prompt.top_logprobs``) and the generator can say, ``logprobs``
    (one :class:`TokenLogprob` per generated token) are set when the iterator is exhausted.
    Empty deltas are never yielded.
    """

    def __init__(self, deltas: Iterator[str]) -> None:
        self._deltas = deltas
        self.finish_reason: str | None = None
        self.usage = Usage()
        self.logprobs: list[TokenLogprob] | None = None

    def __iter__(self) -> Generation:
        return self

    def __next__(self) -> str:
        while True:
            delta = next(self._deltas)
            if delta:
                return delta

    def close(self) -> None:
        """Stops a generation before its end (the model stops at its next token)."""
        close = getattr(self._deltas, "close", None)
        if close is not None:
            close()

    def text(self) -> str:
        """Consumes the rest and returns it joined."""
        return "".join(self)
