"""Question + evidence + generator → a cited answer, whole or as a stream of events.

This is what a query path calls after :func:`mrag.refine.refine`::

    evidence = refine(hits, settings.refine)
    result = answer(question, evidence, generator)          # -> Answer; result.to_dict()
    for event in stream_answer(question, evidence, generator):
        ...  # {"type": "delta", "text": …} … then one {"type": "done", **Answer.to_dict()}
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mrag.generate.citations import Citation, parse_citations
from mrag.generate.prompt import DEFAULT_IMAGE_BUDGET, build_prompt

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from mrag.generate.base import Generator
    from mrag.hits import Evidence


@dataclass
class Answer:
    """A generated answer and the evidence its ``[n]`` markers point at.

    Attributes:
        answer: the text, ``[n]`` markers as the generator wrote them.
        citations: one per cited evidence item, in order of first citation.
        dropped_citations: cited numbers that match no evidence (repeats counted).
        evidence: what the prompt numbered (so a client can show uncited sources too).
        generator: the generator's name.
        finish_reason: ``stop``, ``length`` (the token cap) or ``None`` when unknown.
        prompt_tokens, completion_tokens: as the generator counted them, when it does.
        images: images the prompt carried; ``images_dropped``: left out by the budget.
        elapsed_s: wall time of the generation.
    """

    answer: str
    citations: list[Citation]
    dropped_citations: int
    evidence: list[Evidence] = field(repr=False)
    generator: str
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    images: int = 0
    images_dropped: int = 0
    elapsed_s: float = 0.0

    def to_dict(self, include_thumbnails: bool = False) -> dict[str, Any]:
        """JSON-ready: ``answer``, ``citations``, ``dropped_citations``, ``evidence``, …"""
        return {
            "answer": self.answer,
            "citations": [c.to_dict() for c in self.citations],
            "dropped_citations": self.dropped_citations,
            "evidence": [item.to_dict(include_thumbnails) for item in self.evidence],
            "generator": self.generator,
            "finish_reason": self.finish_reason,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
            },
            "images": self.images,
            "images_dropped": self.images_dropped,
            "elapsed_s": round(self.elapsed_s, 4),
        }


def stream_answer(
    question: str,
    evidence: Sequence[Evidence],
    generator: Generator,
    *,
    image_budget: int = DEFAULT_IMAGE_BUDGET,
    max_new_tokens: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Events of a streamed answer: ``{"type": "delta", "text": …}`` per delta, then one
    ``{"type": "done", "result": Answer}`` (an :class:`Answer`, not yet a dict, so the caller
    chooses ``to_dict``'s options).

    Images are only put in the prompt for a generator that ``accepts_images``.

    Raises:
        ValueError: an empty question.
        GenerationError: the generator failed (an endpoint's HTTP error…), possibly after some
            deltas were sent.
    """
    prompt = build_prompt(
        question,
        evidence,
        image_budget=image_budget if getattr(generator, "accepts_images", False) else 0,
        max_new_tokens=max_new_tokens,
    )
    started = time.perf_counter()
    generation = generator.generate(prompt)
    parts: list[str] = []
    for delta in generation:
        parts.append(delta)
        yield {"type": "delta", "text": delta}
    text = "".join(parts)
    citations, dropped = parse_citations(text, evidence)
    usage = getattr(generation, "usage", None)
    result = Answer(
        answer=text,
        citations=citations,
        dropped_citations=dropped,
        evidence=list(evidence),
        generator=generator.name,
        finish_reason=getattr(generation, "finish_reason", None),
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
        images=len(prompt.images),
        images_dropped=prompt.images_dropped,
        elapsed_s=time.perf_counter() - started,
    )
    yield {"type": "done", "result": result}


def answer(
    question: str,
    evidence: Sequence[Evidence],
    generator: Generator,
    *,
    image_budget: int = DEFAULT_IMAGE_BUDGET,
    max_new_tokens: int | None = None,
) -> Answer:
    """The whole answer at once (:func:`stream_answer` consumed)."""
    for event in stream_answer(
        question, evidence, generator, image_budget=image_budget, max_new_tokens=max_new_tokens
    ):
        if event["type"] == "done":
            return event["result"]
    raise AssertionError("stream_answer ended without a done event")  # pragma: no cover
