"""The OpenAI-compatible client against real HTTP: mrag's own server on 127.0.0.1 (uvicorn in a
thread) serving the tiny transformers model, and small recording generators."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING

import httpx
import pytest

from mrag.errors import ConfigError
from mrag.generate import (
    Generation,
    GenerationError,
    Generator,
    GeneratorSettings,
    answer,
    build_prompt,
    create_generator,
)
from mrag.generate.openai_client import OpenAIGenerator
from mrag.generate.openai_server import create_app
from tests.generate.evidence import QUESTION, corpus, image_evidence, text_evidence
from tests.generate.server import free_port, serve

if TYPE_CHECKING:
    from mrag.generate import Prompt

MODEL = "tiny-causal-lm-random"


@pytest.fixture(scope="module")
def tiny_url():
    tiny = create_generator(MODEL, GeneratorSettings(max_new_tokens=16))
    with serve(create_app(tiny, api_key="sekret")) as url:
        yield url


def _client(url: str, **kwargs) -> OpenAIGenerator:
    kwargs.setdefault("api_key", "sekret")
    return OpenAIGenerator(MODEL, base_url=url, **kwargs)


def test_streamed_and_whole_replies_carry_the_same_answer(tiny_url):
    prompt = build_prompt(QUESTION, corpus())
    streamed = _client(tiny_url).generate(prompt)
    deltas = list(streamed)
    whole = _client(tiny_url, stream=False).generate(prompt)
    whole_deltas = list(whole)
    assert len(deltas) > 1 and len(whole_deltas) == 1  # SSE chunks vs one JSON message
    assert "".join(deltas) == whole_deltas[0] != ""  # greedy: same text both ways
    for generation in (streamed, whole):
        assert generation.finish_reason in ("stop", "length")
        assert 0 < generation.usage.completion_tokens <= 16
        assert generation.usage.prompt_tokens > 100


def test_the_wire_format_is_chat_completion_chunks_ending_in_done(tiny_url):
    body = _client(tiny_url).request_body(build_prompt(QUESTION, corpus(), max_new_tokens=4))
    assert body["max_tokens"] == 4 and body["stream"] is True
    with httpx.stream(
        "POST",
        f"{tiny_url}/chat/completions",
        json=body,
        headers={"Authorization": "Bearer sekret"},
        timeout=30,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] <= 4
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")


def test_answer_over_http_maps_citations_back(tiny_url):
    result = answer(QUESTION, corpus(), _client(tiny_url), max_new_tokens=6)
    assert result.generator == f"openai:{MODEL}"
    assert result.completion_tokens <= 6
    numbers = {c.n for c in result.citations}
    assert numbers <= {1, 2, 3}  # whatever noise it wrote, only real evidence is cited


def test_http_failures_raise_clear_errors(tiny_url):
    prompt = build_prompt(QUESTION, corpus())
    with pytest.raises(GenerationError, match="HTTP 401: missing or wrong API key") as denied:
        list(_client(tiny_url, api_key="wrong").generate(prompt))
    assert denied.value.status == 401
    wrong_model = OpenAIGenerator("gpt-17", base_url=tiny_url, api_key="sekret")
    with pytest.raises(GenerationError, match="HTTP 404: model 'gpt-17' is not served") as lost:
        list(wrong_model.generate(prompt))
    assert lost.value.status == 404
    with pytest.raises(GenerationError, match="does not accept images") as images:
        list(_client(tiny_url, accepts_images=True).generate(
            build_prompt("what is shown?", [image_evidence(1, b"jpeg")])
        ))  # fmt: skip
    assert images.value.status == 400
    nobody = OpenAIGenerator(MODEL, base_url=f"http://127.0.0.1:{free_port()}/v1", timeout_s=2)
    with pytest.raises(GenerationError, match="could not be reached"):
        list(nobody.generate(prompt))


class _Recorder:
    """Answers with what it received; optionally fails after the first delta."""

    name = "recorder"
    accepts_images = True

    def __init__(self, fail: bool = False) -> None:
        self.prompts: list[Prompt] = []
        self.fail = fail

    def generate(self, prompt: Prompt) -> Generation:
        self.prompts.append(prompt)

        def deltas():
            yield f"{len(prompt.images)} images "
            if self.fail:
                raise RuntimeError("the model fell over")
            yield "seen [1]"

        return Generation(deltas())


def test_images_travel_as_data_urls_to_a_model_that_takes_them():
    recorder = _Recorder()
    evidence = [image_evidence(1, b"\xff\xd8photo-1"), text_evidence(2, "a caption here ok"),
                image_evidence(3, b"\xff\xd8photo-3")]  # fmt: skip
    with serve(create_app(recorder)) as url:
        client = OpenAIGenerator("recorder", base_url=url, accepts_images=True)
        result = answer("what is shown?", evidence, client, image_budget=1)
    assert result.answer == "1 images seen [1]"
    assert [c.uri for c in result.citations] == ["s3://corpus/photo-1.jpg"]
    assert (result.images, result.images_dropped) == (1, 1)
    received = recorder.prompts[0]
    assert [i.data for i in received.images] == [b"\xff\xd8photo-1"]
    assert "<<<EVIDENCE [1] uri=s3://corpus/photo-1.jpg modality=image image attached>>>" in (
        received.user
    )


def test_a_failure_mid_stream_is_raised_not_swallowed():
    with serve(create_app(_Recorder(fail=True))) as url:
        client = OpenAIGenerator("recorder", base_url=url)
        generation = client.generate(build_prompt("q?", corpus()))
        assert next(generation) == "0 images "
        with pytest.raises(GenerationError, match="the stream failed: RuntimeError"):
            next(generation)


def test_settings_come_from_arguments_or_the_environment(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_MODEL", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_BASE_URL"):
        create_generator("openai", GeneratorSettings(model="m"))
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    with pytest.raises(ConfigError, match="model name"):
        create_generator("openai")
    client = create_generator("openai", GeneratorSettings(model="m", max_new_tokens=9))
    assert isinstance(client, OpenAIGenerator) and isinstance(client, Generator)
    assert client.base_url == "http://127.0.0.1:9/v1" and client._api_key == "from-env"
    assert client.request_body(build_prompt("q?", corpus()))["max_tokens"] == 9


def test_a_refused_prompt_is_a_400_and_a_failed_whole_reply_a_500():
    from mrag.generate.hf import TransformersGenerator

    strict = TransformersGenerator(MODEL, max_new_tokens=4, max_prompt_tokens=50)
    with serve(create_app(strict)) as url:
        with pytest.raises(GenerationError, match="HTTP 400: the prompt has .* tokens") as long:
            list(OpenAIGenerator(MODEL, base_url=url).generate(build_prompt(QUESTION, corpus())))
    assert long.value.status == 400

    class _Failing(_Recorder):
        def generate(self, prompt: Prompt) -> Generation:
            def deltas():
                yield "partial "
                raise GenerationError("upstream model crashed")

            return Generation(deltas())

    with serve(create_app(_Failing())) as url:
        client = OpenAIGenerator("recorder", base_url=url, stream=False)
        with pytest.raises(GenerationError, match="HTTP 500: upstream model crashed"):
            list(client.generate(build_prompt("q?", corpus())))


def _logprobs_body(stream: bool) -> dict:
    prompt = replace(build_prompt(QUESTION, corpus(), max_new_tokens=3), top_logprobs=4)
    return _client("unused", stream=stream).request_body(prompt)


def test_logprobs_come_back_in_openai_schema_whole_and_streamed(tiny_url):
    from mrag.generate.hf import TransformersGenerator

    whole_body = _logprobs_body(stream=False)
    assert (whole_body["logprobs"], whole_body["top_logprobs"]) == (True, 4)
    headers = {"Authorization": "Bearer sekret"}
    reply = httpx.post(f"{tiny_url}/chat/completions", json=whole_body, headers=headers).json()
    content = reply["choices"][0]["logprobs"]["content"]
    assert len(content) == reply["usage"]["completion_tokens"] == 3
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert entry["bytes"] == list(entry["token"].encode()) and entry["logprob"] <= 0
        assert len(entry["top_logprobs"]) == 4
        best = entry["top_logprobs"][0]
        assert entry["logprob"] == pytest.approx(best["logprob"])  # greedy: the best one
    assert "".join(e["token"] for e in content) == reply["choices"][0]["message"]["content"]

    with httpx.stream(
        "POST", f"{tiny_url}/chat/completions", json=_logprobs_body(stream=True), headers=headers
    ) as response:
        chunks = [
            json.loads(line.removeprefix("data: "))
            for line in response.iter_lines()
            if line.startswith("data: {")
        ]
    carrying = [c for c in chunks if c["choices"] and "logprobs" in c["choices"][0]]
    assert len(carrying) == 1 and carrying[0]["choices"][0]["finish_reason"] in ("stop", "length")
    assert carrying[0]["choices"][0]["logprobs"]["content"] == content  # same model, same tokens

    local = TransformersGenerator(MODEL, max_new_tokens=16)
    prompt = replace(build_prompt(QUESTION, corpus(), max_new_tokens=3), top_logprobs=4)
    in_process = local.generate(prompt)
    in_process.text()
    for stream in (False, True):
        client = _client(tiny_url, stream=stream).generate(prompt)
        client.text()
        assert [t.token for t in client.logprobs] == [t.token for t in in_process.logprobs]
        for over_http, here in zip(client.logprobs, in_process.logprobs, strict=True):
            assert over_http.logprob == pytest.approx(here.logprob, abs=1e-5)
            assert [a for a, _ in over_http.top] == [a for a, _ in here.top]


def test_logprob_requests_the_server_cannot_answer_are_400s(tiny_url):
    headers = {"Authorization": "Bearer sekret"}
    body = {**_logprobs_body(stream=False), "logprobs": False}
    refused = httpx.post(f"{tiny_url}/chat/completions", json=body, headers=headers)
    assert refused.status_code == 400
    assert "top_logprobs needs logprobs: true" in refused.json()["error"]["message"]
    with serve(create_app(_Recorder())) as url:  # a generator that reports no logprobs
        client = OpenAIGenerator("recorder", base_url=url, stream=False)
        asked = replace(build_prompt("q?", corpus()), top_logprobs=2)
        with pytest.raises(GenerationError, match="does not report log-probabilities") as err:
            client.generate(asked).text()
        assert err.value.status == 400
        plain = client.generate(build_prompt("q?", corpus()))
        assert plain.text() == "0 images seen [1]" and plain.logprobs is None
