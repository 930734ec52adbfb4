"""The transformers generator with the seeded random-init tiny causal LM (noise out; the
structure is what is asserted)."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from mrag.errors import ConfigError
from mrag.generate import Generator, GeneratorSettings, answer, build_prompt, create_generator
from mrag.generate.hf import TransformersGenerator, build_tiny_tokenizer
from tests.generate.evidence import INJECTION, QUESTION, corpus


@pytest.fixture(scope="module")
def tiny() -> TransformersGenerator:
    settings = GeneratorSettings(max_new_tokens=12)
    return create_generator("tiny-causal-lm-random", settings)  # type: ignore[return-value]


def test_streams_deltas_and_stops_at_the_token_cap(tiny):
    generation = tiny.generate(build_prompt(QUESTION, corpus()))
    deltas = list(generation)
    assert isinstance(tiny, Generator)
    assert len(deltas) > 0 and all(deltas)
    assert generation.usage.completion_tokens is not None
    assert 0 < generation.usage.completion_tokens <= 12
    assert generation.usage.prompt_tokens > 100
    if generation.finish_reason == "length":
        assert generation.usage.completion_tokens == 12
    # greedy decoding of seeded weights: the same prompt gives the same text
    assert "".join(tiny.generate(build_prompt(QUESTION, corpus()))) == "".join(deltas)


def test_a_prompt_may_ask_for_fewer_tokens_never_more(tiny):
    short = tiny.generate(build_prompt(QUESTION, corpus(), max_new_tokens=3))
    short.text()
    assert short.usage.completion_tokens <= 3
    long = tiny.generate(build_prompt(QUESTION, corpus(), max_new_tokens=10_000))
    long.text()
    assert long.usage.completion_tokens <= 12


def test_chat_template_keeps_the_planted_text_inside_the_fence_after_the_system_turn(tiny):
    prompt = build_prompt(QUESTION, corpus())
    text = tiny.tokenizer.decode(tiny.prompt_ids(prompt)[0])
    system_at = text.index("<|im_start|>system\n")
    user_at = text.index("<|im_start|>user\n")
    fence_at = text.index("<<<EVIDENCE [1]", user_at)
    planted_at = text.index(INJECTION)
    close_at = text.index("<<<END EVIDENCE [1]>>>", user_at)
    assert system_at < user_at < fence_at < planted_at < close_at
    assert text.endswith("<|im_start|>assistant\n")


def test_answer_through_the_tiny_model_has_the_answer_shape(tiny):
    result = answer(QUESTION, corpus(), tiny, max_new_tokens=5)
    payload = result.to_dict()
    assert payload["generator"] == "tiny-causal-lm-random"
    assert payload["usage"]["completion_tokens"] <= 5
    assert payload["answer"] == result.answer and isinstance(payload["citations"], list)
    assert payload["finish_reason"] in ("stop", "length")


def test_tiny_tokenizer_is_deterministic_and_round_trips_any_text():
    first, second = build_tiny_tokenizer(), build_tiny_tokenizer()
    text = "Ünïcode ✓ and <<<fences>>> [1]\n"
    assert first(text)["input_ids"] == second(text)["input_ids"]
    assert first.decode(first(text)["input_ids"]) == text
    assert len(first) == 512


def test_factory_refuses_what_is_not_a_generator():
    with pytest.raises(ConfigError, match="hf_causal_lm"):
        create_generator("all-MiniLM-L6-v2-packaged")
    with pytest.raises(ConfigError, match="extractive, transformers, openai"):
        create_generator("gpt-17")
    with pytest.raises(ConfigError, match="generator.dtype"):
        GeneratorSettings(dtype="int3")


def test_closing_a_stream_early_stops_the_model():
    generator = TransformersGenerator("tiny-causal-lm-random", max_new_tokens=4000)
    generation = generator.generate(build_prompt(QUESTION, corpus()))
    assert next(generation)
    generation.close()  # joins the generate thread, which the cancel criterion ends
    assert not [t for t in threading.enumerate() if t.name == "generate-tiny-causal-lm-random"]


@pytest.mark.gpu
def test_cuda_fp16_generates_through_the_same_code():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    generator = TransformersGenerator("tiny-causal-lm-random", device="cuda", max_new_tokens=8)
    assert generator.model.dtype == torch.float16
    generation = generator.generate(build_prompt(QUESTION, corpus()))
    assert generation.text() and 0 < generation.usage.completion_tokens <= 8


def test_next_token_logprobs_batched_match_each_prompt_alone_and_generate(tiny):
    import numpy as np

    prompts = [
        build_prompt(QUESTION, corpus()[:n], max_new_tokens=1) for n in (3, 1, 2)
    ]  # three lengths: the batch is left-padded
    batched = tiny.next_token_logprobs(prompts, batch_size=3)
    assert batched.shape == (3, len(tiny.tokenizer))
    np.testing.assert_allclose(np.exp(batched).sum(axis=1), 1.0, atol=1e-4)
    for row, prompt in zip(batched, prompts, strict=True):
        np.testing.assert_allclose(row, tiny.next_token_logprobs([prompt])[0], atol=1e-5)
        generation = tiny.generate(replace(prompt, top_logprobs=3))
        generation.text()
        (first,) = generation.logprobs
        assert first.logprob == pytest.approx(float(row.max()), abs=1e-5)  # greedy: the best
        assert [lp for _, lp in first.top] == pytest.approx(sorted(row)[::-1][:3], abs=1e-5)
    few = tiny.next_token_logprobs(prompts, [5, 7], batch_size=2)
    np.testing.assert_allclose(few, batched[:, [5, 7]], atol=1e-5)


def test_a_generation_reports_no_logprobs_unless_asked(tiny):
    generation = tiny.generate(build_prompt(QUESTION, corpus(), max_new_tokens=2))
    generation.text()
    assert generation.logprobs is None


def test_the_tiny_vision_language_model_reads_the_images_of_a_prompt():
    import io

    import numpy as np
    from PIL import Image

    from tests.generate.evidence import image_evidence

    def jpeg(rgb):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), rgb).save(buffer, "JPEG")
        return buffer.getvalue()

    vlm = create_generator("tiny-vlm-random", GeneratorSettings(max_new_tokens=4))
    assert vlm.accepts_images and isinstance(vlm, Generator)
    red = build_prompt("what is shown?", [image_evidence(1, jpeg((220, 0, 0)))])
    blue = build_prompt("what is shown?", [image_evidence(1, jpeg((0, 0, 230)))])
    text = vlm.prompt_text(red)
    assert text.index("image attached") < text.index("Image of evidence [1]:<image>")
    inputs = vlm.model_inputs([red])
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    assert int((inputs["input_ids"] == vlm.tokenizer.convert_tokens_to_ids("<image>")).sum()) == 4
    scores = vlm.next_token_logprobs([red, blue])
    assert not np.allclose(scores[0], scores[1], atol=1e-6)  # the pixels reach the model
    generation = vlm.generate(red)
    assert generation.text() and 0 < generation.usage.completion_tokens <= 4
    with pytest.raises(ValueError, match="does not decode"):
        vlm.generate(build_prompt("q?", [image_evidence(1, b"not a jpeg")]))
