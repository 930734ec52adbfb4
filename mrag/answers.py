"""Answering a question from the corpus: search → refine → generate, with ``[n]`` citations.

One path for every front end: ``mrag ask``, notebooks and the Serve application's
``POST /v1/answer`` (which runs the same steps split across deployments). The generator and the
refiner's budget come from the config's ``generate`` section::

    engine = QueryEngine.for_config(config)
    generator = generator_from_config(config, embed=engine.text.embed_texts)
    for event in answer_events(engine, AnswerRequest(query="how do I encrypt a file?"), generator):
        ...  # {"type": "hits"}, then {"type": "delta"}…, then {"type": "done", "result": Answer}

An answer's citations (``citation_dicts``) name the evidence's chunks, all of them among the
returned hits: the refiner only merges, drops and cuts the hits it is given.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, Strict

from mrag.query import LruCache, SearchRequest, bounded_request_model
from mrag.retrieve.search import explain

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    import numpy as np

    from mrag.config import MragConfig
    from mrag.generate import Answer, Generator
    from mrag.query import QueryEngine
    from mrag.refine import Evidence, RefineSettings
    from mrag.retrieve.search import Hit

#: What an image-only question is called in the prompt.
IMAGE_QUESTION = "(image query) What does the corpus hold about this image?"


class AnswerRequest(SearchRequest):
    """A search request (the question is its ``query``, or an ``image``) and how to answer."""

    stream: Annotated[bool, Strict(), explain("stream must be true or false")] = Field(
        False,
        description=(
            "Answer as server-sent events: `hits`, then `delta`s of the answer's text, then "
            "`citations`, then `done` (an `error` event ends a stream that fails midway)."
        ),
    )


@functools.cache
def answer_request_model(max_k: int, default_k: int) -> type[AnswerRequest]:
    """:class:`AnswerRequest` with ``k`` bounded by ``serve.max_k`` and defaulting to
    ``generate.k`` (as :func:`mrag.query.search_request_model` does for searches)."""
    return bounded_request_model(
        AnswerRequest, max_k, default_k, "How many hits to retrieve as evidence"
    )


def question_of(request: SearchRequest) -> str:
    """The question the prompt asks: the query text, or a stand-in for an image query."""
    return request.query if request.query is not None else IMAGE_QUESTION


def evidence_search(request: SearchRequest) -> SearchRequest:
    """The search an answer runs: with thumbnails, since visual evidence is shown to
    generators that take images (the response leaves them out unless the client asked)."""
    return request.model_copy(update={"include_thumbnail": True})


def generator_from_config(
    config: MragConfig,
    *,
    embed: Callable[[list[str]], np.ndarray] | None = None,
    device: str = "cpu",
) -> Generator:
    """The ``generate`` section's generator; ``embed`` is the extractive one's sentence encoder
    (the caller's loaded text encoder; the packaged MiniLM when ``None``)."""
    from mrag.generate import create_generator
    from mrag.generate.factory import settings_from_config

    settings = settings_from_config(config, device=device)
    return create_generator(config.generate.generator, settings, embed=embed)


def condense_evidence(
    config: MragConfig, question: str, evidence: list[Evidence], generator: Generator
) -> list[Evidence]:
    """``generate.condense``: the evidence cut to what bears on the question, or unchanged.

    ``extractive`` uses the answer's own extractive generator's encoder when it is one (no
    second model load); ``generator`` asks the answer's generator to quote the sentences.
    """
    mode = config.generate.condense
    if mode == "none" or not evidence:
        return evidence
    from mrag.generate.condense import condense
    from mrag.generate.extractive import ExtractiveGenerator

    if mode == "extractive":
        extractive = generator if isinstance(generator, ExtractiveGenerator) else None
        return condense(question, evidence, extractive)
    return condense(question, evidence, generator)


def refine_settings(config: MragConfig) -> RefineSettings:
    """The refiner with the ``generate`` section's evidence budget."""
    from mrag.refine import RefineSettings

    return RefineSettings(
        max_tokens=config.generate.max_tokens, max_images=config.generate.max_images
    )


def refine_hits(config: MragConfig, hits: Sequence[Hit]) -> list[Evidence]:
    from mrag.refine import refine

    return refine(hits, refine_settings(config))


def engine_generator(engine: QueryEngine) -> Generator:
    """The engine's config's generator, built once per config (the extractive one shares the
    engine's loaded text encoder)."""
    from mrag.query import config_fingerprint

    key = config_fingerprint(engine.config)

    def build() -> Generator:
        extractive = engine.config.generate.generator == "extractive"
        embed = engine.text.embed_texts if extractive else None
        return generator_from_config(engine.config, embed=embed)

    # Bounded like the engines: a long-lived process asked with many configs keeps a few.
    return _GENERATORS.get_or_create(key, build, engine.config.serve.engine_cache_size)


def answer_events(
    engine: QueryEngine, request: SearchRequest, generator: Generator
) -> Iterator[dict[str, Any]]:
    """In process: ``{"type": "hits", "hits": [Hit]}``, then the generator's
    ``{"type": "delta", "text": …}`` events, then ``{"type": "done", "result": Answer}``."""
    from mrag.generate import stream_answer

    hits = engine.run(evidence_search(request))
    yield {"type": "hits", "hits": hits}
    question = question_of(request)
    evidence = condense_evidence(
        engine.config, question, refine_hits(engine.config, hits), generator
    )
    yield from stream_answer(
        question,
        evidence,
        generator,
        image_budget=engine.config.generate.max_images,
    )


def ask(
    engine: QueryEngine,
    question: str | None,
    *,
    image: bytes | None = None,
    k: int | None = None,
    filters: dict[str, Any] | None = None,
    generator: Generator | None = None,
) -> Answer:
    """The whole answer in process: validated like ``POST /v1/answer``, the config's generator
    unless ``generator`` is given. ``result.evidence`` holds what the ``[n]`` point at."""
    from mrag.query import validate_request

    data = {"query": question, "image": image, "filters": filters}
    data["k"] = k if k is not None else engine.config.generate.k
    request = validate_request(data, engine.config.serve.max_k)
    for event in answer_events(engine, request, generator or engine_generator(engine)):
        if event["type"] == "done":
            return event["result"]
    raise AssertionError("answer_events ended without a done event")  # pragma: no cover


def citation_dicts(result: Answer) -> list[dict[str, Any]]:
    """The answer's citations, JSON-ready (see :func:`with_chunk_id`)."""
    return [with_chunk_id(citation.to_dict()) for citation in result.citations]


def with_chunk_id(citation: dict[str, Any]) -> dict[str, Any]:
    """A citation dict with ``chunk_id`` (its first chunk: a hit to open and highlight) besides
    every merged ``chunk_ids``."""
    return {"n": citation["n"], "chunk_id": citation["chunk_ids"][0], **citation}


_GENERATORS: LruCache[str, Generator] = LruCache()
