"""Any OpenAI-compatible chat-completions endpoint (vLLM, TGI, llama.cpp, hosted) as a generator.

``POST {base_url}/chat/completions`` with the prompt's two messages; with ``stream`` (the
default) the reply is server-sent events, ``data: {chunk}`` lines ending with ``data: [DONE]``,
and each chunk's ``choices[0].delta.content`` is a delta. Images go as ``image_url`` parts with
base64 ``data:`` URLs, only when ``accepts_images`` says the served model takes them. A prompt
with ``top_logprobs`` asks for ``logprobs`` (and ``top_logprobs``), read back into
``Generation.logprobs`` from a whole reply or from the chunks of a stream. An HTTP
error, a timeout or an ``error`` object in the stream raises :class:`GenerationError` with the
status and the server's message.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

from mrag.errors import ConfigError
from mrag.generate.base import Generation, GenerationError, TokenLogprob

if TYPE_CHECKING:
    from collections.abc import Iterator

    import httpx

    from mrag.generate.prompt import Prompt

log = logging.getLogger(__name__)


class OpenAIGenerator:
    """A chat-completions client.

    Args:
        model: the served model's name (``OPENAI_MODEL`` when empty).
        base_url: the API root including ``/v1`` (``OPENAI_BASE_URL`` when empty).
        api_key: sent as ``Authorization: Bearer …`` (``OPENAI_API_KEY`` when empty; none
            sent when both are empty, as local servers need none).
        accepts_images: send the prompt's images (only for a vision-language model).
        stream: ask for server-sent events (``False``: one JSON reply, one delta).
        max_new_tokens: the answer cap sent as ``max_tokens``; a prompt may ask for fewer.
        temperature: sampling temperature sent to the server.
        timeout_s: connect and per-read timeout (a stream may last longer; each read may not).

    Raises:
        ConfigError: no base URL or no model.
    """

    #: ``generate`` asks the endpoint for log-probabilities when a prompt does (whether the
    #: endpoint sends them is its own business: ``Generation.logprobs`` stays ``None`` if not).
    reports_logprobs = True

    def __init__(
        self,
        model: str = "",
        *,
        base_url: str = "",
        api_key: str = "",
        accepts_images: bool = False,
        stream: bool = True,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        timeout_s: float = 60.0,
    ) -> None:
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL", "")).rstrip("/")
        self.model = model or os.environ.get("OPENAI_MODEL", "")
        if not self.base_url:
            raise ConfigError(
                "the openai generator needs a base URL: pass base_url or set OPENAI_BASE_URL "
                "(e.g. http://127.0.0.1:8000/v1 for a local vLLM)"
            )
        if not self.model:
            raise ConfigError(
                "the openai generator needs a model name: pass model or set OPENAI_MODEL"
            )
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self._api_key = api_key or os.environ.get("OPENAI_API_KEY", "")
        self.name = f"openai:{self.model}"
        self.accepts_images = accepts_images
        self.stream = stream
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.timeout_s = timeout_s

    def request_body(self, prompt: Prompt) -> dict[str, Any]:
        """The chat-completions request for ``prompt``."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": prompt.messages(images=self.accepts_images),
            "max_tokens": min(prompt.max_new_tokens or self.max_new_tokens, self.max_new_tokens),
            "temperature": self.temperature,
            "stream": self.stream,
        }
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        if prompt.top_logprobs is not None:
            body["logprobs"] = True
            if prompt.top_logprobs > 0:
                body["top_logprobs"] = prompt.top_logprobs
        return body

    def generate(self, prompt: Prompt) -> Generation:
        """Streams the answer; the request is sent on the first ``next()``."""
        body = self.request_body(prompt)

        def deltas() -> Iterator[str]:
            import httpx

            headers = {"Accept": "text/event-stream" if self.stream else "application/json"}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            url = f"{self.base_url}/chat/completions"
            timeout = httpx.Timeout(self.timeout_s)
            try:
                with (
                    httpx.Client(timeout=timeout) as client,
                    client.stream("POST", url, json=body, headers=headers) as response,
                ):
                    if response.status_code >= 400:
                        response.read()
                        raise GenerationError(
                            f"{url} answered HTTP {response.status_code}: "
                            f"{_error_message(response)}",
                            status=response.status_code,
                        )
                    if self.stream:
                        yield from self._read_events(response, generation)
                    else:
                        response.read()
                        yield self._read_completion(response, generation)
            except httpx.TimeoutException as exc:
                raise GenerationError(f"{url} timed out after {self.timeout_s} s: {exc}") from exc
            except httpx.HTTPError as exc:
                raise GenerationError(f"{url} could not be reached: {exc}") from exc

        generation = Generation(deltas())
        return generation

    def _read_events(self, response: httpx.Response, generation: Generation) -> Iterator[str]:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, ": keep-alive" comments, event:/id: fields
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                return
            chunk = _json(data, response)
            if "error" in chunk:
                raise GenerationError(f"the stream failed: {_describe(chunk['error'])}")
            _record_usage(chunk, generation)
            for choice in chunk.get("choices") or ():
                if choice.get("finish_reason"):
                    generation.finish_reason = choice["finish_reason"]
                _record_logprobs(choice, generation)
                content = (choice.get("delta") or {}).get("content")
                if content:
                    yield content
        log.warning("%s: the event stream ended without [DONE]", response.url)

    def _read_completion(self, response: httpx.Response, generation: Generation) -> str:
        reply = _json(response.text, response)
        choices = reply.get("choices") or []
        if not choices:
            raise GenerationError(f"{response.url} answered without choices: {response.text[:200]}")
        _record_usage(reply, generation)
        generation.finish_reason = choices[0].get("finish_reason")
        _record_logprobs(choices[0], generation)
        content = (choices[0].get("message") or {}).get("content")
        return content if isinstance(content, str) else ""


def _json(text: str, response: httpx.Response) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise GenerationError(f"{response.url} sent something not JSON: {text[:200]!r}") from None
    if not isinstance(value, dict):
        raise GenerationError(f"{response.url} sent JSON that is not an object: {text[:200]!r}")
    return value


def _record_usage(chunk: dict[str, Any], generation: Generation) -> None:
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        generation.usage.prompt_tokens = usage.get("prompt_tokens")
        generation.usage.completion_tokens = usage.get("completion_tokens")


def _record_logprobs(choice: dict[str, Any], generation: Generation) -> None:
    """Appends a choice's ``logprobs.content`` (OpenAI's schema: ``token``, ``logprob``,
    ``top_logprobs`` of ``{token, logprob}``) to ``generation.logprobs``; a stream sends them
    chunk by chunk."""
    content = (choice.get("logprobs") or {}).get("content")
    if not isinstance(content, list):
        return
    if generation.logprobs is None:
        generation.logprobs = []
    for entry in content:
        try:
            top = tuple(
                (str(alt.get("token", "")), float(alt["logprob"]))
                for alt in entry.get("top_logprobs") or ()
            )
            token = TokenLogprob(str(entry.get("token", "")), float(entry["logprob"]), top)
        except (AttributeError, KeyError, TypeError, ValueError):
            raise GenerationError(
                f"a logprobs entry is not in OpenAI's schema: {str(entry)[:200]}"
            ) from None
        generation.logprobs.append(token)


def _describe(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)


def _error_message(response: httpx.Response) -> str:
    """The server's own message: OpenAI's ``{"error": {"message"}}``, FastAPI's ``detail``."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        if "error" in body:
            return _describe(body["error"])
        if "detail" in body:
            return str(body["detail"])
    return response.text[:300]
