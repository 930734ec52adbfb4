"""Generators: a question and its evidence → an answer cited with ``[n]``.

One interface, :class:`Generator` (``generate(prompt) -> Iterator[str]`` of text deltas), three
implementations made by :func:`create_generator`:

- ``extractive``: no model; quotes the evidence sentences closest to the question (the packaged
  MiniLM scores them), each with its ``[n]``. The offline default.
- ``transformers``: a local causal LM (``Qwen/Qwen2.5-0.5B-Instruct``, or the seeded
  ``tiny-causal-lm-random``), streamed with ``TextIteratorStreamer``.
- ``openai``: any OpenAI-compatible ``/v1/chat/completions`` endpoint, streamed over SSE.

Every model reads the same :class:`Prompt` from :func:`build_prompt`, in which retrieved text is
fenced as quoted data, never instructions. :func:`answer` / :func:`stream_answer` run the whole
step and :func:`parse_citations` maps ``[n]`` back to the evidence. Heavy libraries (torch,
transformers, httpx, fastapi) are imported only by the implementations that use them.
"""

from __future__ import annotations

from mrag.generate.answer import Answer, answer, stream_answer
from mrag.generate.base import Generation, GenerationError, Generator, TokenLogprob, Usage
from mrag.generate.citations import Citation, parse_citations
from mrag.generate.factory import GeneratorSettings, create_generator, list_generators
from mrag.generate.prompt import (
    DEFAULT_IMAGE_BUDGET,
    SYSTEM_INSTRUCTION,
    Prompt,
    PromptImage,
    build_prompt,
    neutralise_fences,
)

__all__ = [
    "DEFAULT_IMAGE_BUDGET",
    "SYSTEM_INSTRUCTION",
    "Answer",
    "Citation",
    "Generation",
    "GenerationError",
    "Generator",
    "GeneratorSettings",
    "Prompt",
    "PromptImage",
    "TokenLogprob",
    "Usage",
    "answer",
    "build_prompt",
    "create_generator",
    "list_generators",
    "neutralise_fences",
    "parse_citations",
    "stream_answer",
]
