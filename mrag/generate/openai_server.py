"""A small OpenAI-compatible chat-completions server over any :class:`~mrag.generate.Generator`.

It exists so that the ``openai`` client is tested against real HTTP (and so a local model can be
put behind the same API as vLLM for a quick trial). It imports fastapi at module level (FastAPI
reads the handlers' annotations at runtime); ``mrag.generate`` itself never imports it.

``POST /v1/chat/completions`` takes the chat-completions request (``model``, ``messages`` with
text and ``image_url`` data-URL parts, ``max_tokens`` / ``max_completion_tokens``, ``stream``,
``stream_options.include_usage``, ``logprobs`` and ``top_logprobs``) and answers with a
``chat.completion`` object or, streamed, ``chat.completion.chunk`` server-sent events ending in
``data: [DONE]``. Log-probabilities follow OpenAI's schema (``choices[i].logprobs.content``: one
``{token, logprob, bytes, top_logprobs}`` per generated token); a stream sends them all in the
chunk that carries ``finish_reason`` (the text deltas do not map one-to-one onto tokens), which
clients that concatenate ``content`` arrays read the same way. Unlike OpenAI (at most 20),
``top_logprobs`` may go up to the vocabulary, so a tiny test model's whole next-token
distribution can be read over HTTP. ``GET /v1/models``
lists the one model. Errors are OpenAI's ``{"error": {"message", "type", "code"}}`` with a 4xx
status.

Run one (the tiny random model; noise out, but the whole path)::

    python -m mrag.generate.openai_server --generator tiny-causal-lm-random --port 8001
    # then: create_generator("openai", GeneratorSettings(model="tiny-causal-lm-random",
    #                        base_url="http://127.0.0.1:8001/v1"))

A generator served this way reads prompts rebuilt from the chat messages (no structured
evidence), so the ``extractive`` generator cannot be served; model generators can.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request  # noqa: TC002 - FastAPI reads the annotations at runtime
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from mrag.errors import MragError
from mrag.generate.prompt import Prompt

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from mrag.generate.base import Generator

log = logging.getLogger(__name__)

#: The most ``top_logprobs`` a request may ask for (OpenAI's own limit is 20).
_MAX_TOP_LOGPROBS = 1 << 20


def create_app(generator: Generator, *, model: str = "", api_key: str = "") -> FastAPI:
    """The FastAPI app serving ``generator`` under the model name ``model`` (default: the
    generator's name); with ``api_key``, requests need ``Authorization: Bearer <api_key>``."""
    served = model or generator.name
    app = FastAPI(title="mrag OpenAI-compatible generator", docs_url=None, redoc_url=None)

    def error(status: int, message: str, kind: str, code: str) -> JSONResponse:
        body = {"error": {"message": message, "type": kind, "code": code}}
        return JSONResponse(body, status_code=status)

    def unauthorised(request: Request) -> JSONResponse | None:
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            return error(401, "missing or wrong API key", "authentication_error", "invalid_api_key")
        return None

    @app.get("/v1/models")
    def models(request: Request) -> Any:
        denied = unauthorised(request)
        if denied is not None:
            return denied
        card = {"id": served, "object": "model", "created": 0, "owned_by": "mrag"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        denied = unauthorised(request)
        if denied is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return error(400, "the body is not JSON", "invalid_request_error", "invalid_json")
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object", "invalid_request_error", "bad")
        if body.get("model") != served:
            message = f"model {body.get('model')!r} is not served here; this server has {served!r}"
            return error(404, message, "invalid_request_error", "model_not_found")
        try:
            prompt = _prompt(body)
        except ValueError as exc:
            return error(400, str(exc), "invalid_request_error", "invalid_messages")
        if prompt.images and not generator.accepts_images:
            message = f"model {served!r} does not accept images"
            return error(400, message, "invalid_request_error", "images_not_supported")
        if prompt.top_logprobs is not None and not getattr(generator, "reports_logprobs", False):
            message = f"model {served!r} does not report log-probabilities"
            return error(400, message, "invalid_request_error", "logprobs_not_supported")
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        try:  # a model generator tokenises here: a prompt it refuses is the client's error
            generation = await run_in_threadpool(generator.generate, prompt)
        except ValueError as exc:
            return error(400, str(exc), "invalid_request_error", "invalid_prompt")
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = _events(generation, served, completion_id, include_usage, prompt.top_logprobs)
            return StreamingResponse(events, media_type="text/event-stream")
        try:
            text = await run_in_threadpool(lambda: "".join(generation))
            logprobs = _logprobs(generation, prompt.top_logprobs)
        except MragError as exc:
            return error(500, str(exc), "server_error", "generation_failed")
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": served,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": logprobs,
                    "finish_reason": getattr(generation, "finish_reason", None) or "stop",
                }
            ],
            "usage": _usage(generation),
        }

    return app


def _prompt(body: dict[str, Any]) -> Prompt:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    if not all(isinstance(m, dict) for m in messages):
        raise ValueError("each message must be an object")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    logprobs = body.get("logprobs", False)
    top = body.get("top_logprobs")
    if not isinstance(logprobs, bool) and logprobs is not None:
        raise ValueError(f"logprobs must be true or false, got {logprobs!r}")
    if top is not None:
        if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= _MAX_TOP_LOGPROBS:
            raise ValueError(
                f"top_logprobs must be an integer from 0 to {_MAX_TOP_LOGPROBS}, got {top!r}"
            )
        if not logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
    return Prompt.from_messages(
        messages, max_new_tokens=max_tokens, top_logprobs=(top or 0) if logprobs else None
    )


def _logprobs(generation: Any, top_logprobs: int | None) -> dict[str, Any] | None:
    """``{"content": [...]}`` in OpenAI's schema, or ``None`` when none were asked for.

    Raises:
        MragError: they were asked for and the served generator cannot give them.
    """
    if top_logprobs is None:
        return None
    tokens = getattr(generation, "logprobs", None)
    if tokens is None:
        raise MragError("the served generator does not report log-probabilities")

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {
        "content": [
            {
                **entry(t.token, t.logprob),
                "top_logprobs": [entry(alt, lp) for alt, lp in t.top[:top_logprobs]],
            }
            for t in tokens
        ]
    }


def _usage(generation: Any) -> dict[str, int]:
    usage = getattr(generation, "usage", None)
    prompt_tokens = getattr(usage, "prompt_tokens", None) or 0
    completion_tokens = getattr(usage, "completion_tokens", None) or 0
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _events(
    generation: Iterator[str],
    served: str,
    completion_id: str,
    include_usage: bool,
    top_logprobs: int | None = None,
) -> Iterator[str]:
    """Server-sent events of a streamed completion (run by Starlette in its thread pool)."""
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> str:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": served,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(payload)}\n\n"

    def delta(
        content: dict[str, Any], finish_reason: str | None = None, logprobs: Any = None
    ) -> str:
        choice = {"index": 0, "delta": content, "finish_reason": finish_reason}
        if logprobs is not None:
            choice["logprobs"] = logprobs
        return chunk([choice])

    yield delta({"role": "assistant", "content": ""})
    try:
        for text in generation:
            yield delta({"content": text})
        logprobs = _logprobs(generation, top_logprobs)
    except Exception as exc:  # the status line is gone: report in-band, as OpenAI does
        log.exception("generation failed mid-stream")
        body = {"error": {"message": f"{type(exc).__name__}: {exc}", "type": "server_error"}}
        yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"
        return
    finally:
        close = getattr(generation, "close", None)
        if close is not None:
            close()  # a client that went away stops the model
    yield delta({}, getattr(generation, "finish_reason", None) or "stop", logprobs)
    if include_usage:
        yield chunk([], usage=_usage(generation))
    yield "data: [DONE]\n\n"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mrag.generate.openai_server``: serve a generator on 127.0.0.1."""
    import uvicorn

    from mrag.generate.factory import GeneratorSettings, create_generator

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", default="tiny-causal-lm-random")
    parser.add_argument("--model", default="", help="served model name (default: the generator's)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--api-key", default="")
    args = parser.parse_args(argv)
    settings = GeneratorSettings(device=args.device, max_new_tokens=args.max_new_tokens)
    generator = create_generator(args.generator, settings)
    app = create_app(generator, model=args.model, api_key=args.api_key)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
