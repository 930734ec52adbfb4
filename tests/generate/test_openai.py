"""The OpenAI-compatible client against real HTTP: mrag's own server on 127.0.0.1 (uvicorn in a
thread) serving the tiny transformers model, and small recording generators."""

from __future__ import annotations

import json
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
