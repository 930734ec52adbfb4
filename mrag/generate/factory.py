"""``create_generator``: a generator from a name (or a causal-LM spec) and typed settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mrag.errors import ConfigError
from mrag.models import ModelSpec, get_model_spec, list_models

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from mrag.config import MragConfig
    from mrag.generate.base import Generator

#: Generator kinds that are not model names.
KINDS = ("extractive", "transformers", "openai")
#: The model ``transformers`` loads when ``settings.model`` is empty.
DEFAULT_TRANSFORMERS_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
_DTYPES = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class GeneratorSettings:
    """How a generator runs; each kind reads the fields it needs.

    Attributes:
        model: ``transformers``: a registered ``hf_causal_lm`` spec name; ``openai``: the
            served model's name (``OPENAI_MODEL`` when empty).
        weights: ``transformers``: local path or object-storage URI overriding the weights.
        device: ``transformers``: ``cpu`` or ``cuda``.
        dtype: ``transformers``: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16``, ``bf16``.
        max_new_tokens: the cap on an answer's tokens (model generators).
        temperature: 0 for greedy decoding.
        base_url: ``openai``: API root with ``/v1`` (``OPENAI_BASE_URL`` when empty).
        api_key: ``openai``: bearer token (``OPENAI_API_KEY`` when empty).
        accepts_images: ``openai``: the served model takes images.
        stream: ``openai``: ask for server-sent events.
        timeout_s: ``openai``: connect and per-read timeout.
        max_sentences: ``extractive``: sentences in the digest.
        seed: random-init weights and sampling.
    """

    model: str = ""
    weights: str = ""
    device: str = "cpu"
    dtype: str = "auto"
    max_new_tokens: int = 512
    temperature: float = 0.0
    base_url: str = ""
    api_key: str = ""
    accepts_images: bool = False
    stream: bool = True
    timeout_s: float = 60.0
    max_sentences: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (
            ("dtype", self.dtype, self.dtype in _DTYPES, f"one of {', '.join(_DTYPES)}"),
            ("max_new_tokens", self.max_new_tokens, self.max_new_tokens >= 1, "an integer >= 1"),
            ("temperature", self.temperature, self.temperature >= 0, "a number >= 0"),
            ("timeout_s", self.timeout_s, self.timeout_s > 0, "a number > 0"),
            ("max_sentences", self.max_sentences, self.max_sentences >= 1, "an integer >= 1"),
        )
        for name, value, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"generator.{name} must be {allowed}, got {value!r}")


def settings_from_config(config: MragConfig, *, device: str = "cpu") -> GeneratorSettings:
    """The ``generate`` section as the generators (and an ``openai`` reranker) take it."""
    section = config.generate
    return GeneratorSettings(
        model=section.model,
        weights=section.weights,
        device=device,
        dtype=config.ingest.dtype,
        max_new_tokens=section.max_new_tokens,
        temperature=section.temperature,
        base_url=section.base_url,
        accepts_images=section.accepts_images,
        timeout_s=section.timeout_s,
        max_sentences=section.max_sentences,
        seed=config.seed,
    )


def list_generators() -> list[str]:
    """The kinds, then every registered ``hf_causal_lm`` model name."""
    causal = [n for n in list_models() if get_model_spec(n).family == "hf_causal_lm"]
    return [*KINDS, *causal]


def create_generator(
    name_or_spec: str | ModelSpec,
    settings: GeneratorSettings | None = None,
    *,
    embed: Callable[[list[str]], np.ndarray] | None = None,
) -> Generator:
    """A ready generator.

    Args:
        name_or_spec: ``extractive``; ``openai``; ``transformers`` (the model is
            ``settings.model``); a registered ``hf_causal_lm`` model name (e.g.
            ``tiny-causal-lm-random``, ``Qwen/Qwen2.5-0.5B-Instruct``); or such a spec.
        settings: how it runs (defaults when ``None``).
        embed: ``extractive``: the sentence encoder, texts → (N, D) vectors (default: the
            packaged MiniLM). A loaded encoder the caller already holds can be shared this way.

    Raises:
        ConfigError: an unknown name, or a model that is not a causal LM.
        WeightsNotFoundError: a model's weights are nowhere to be found.
    """
    settings = settings or GeneratorSettings()
    if isinstance(name_or_spec, str) and name_or_spec == "extractive":
        from mrag.generate.extractive import ExtractiveGenerator

        return ExtractiveGenerator(embed, max_sentences=settings.max_sentences)
    if isinstance(name_or_spec, str) and name_or_spec == "openai":
        from mrag.generate.openai_client import OpenAIGenerator

        return OpenAIGenerator(
            settings.model,
            base_url=settings.base_url,
            api_key=settings.api_key,
            accepts_images=settings.accepts_images,
            stream=settings.stream,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            timeout_s=settings.timeout_s,
        )
    if isinstance(name_or_spec, ModelSpec):
        spec = name_or_spec
    elif name_or_spec == "transformers":
        spec = get_model_spec(settings.model or DEFAULT_TRANSFORMERS_MODEL)
    else:
        try:
            spec = get_model_spec(name_or_spec)
        except ConfigError:
            raise ConfigError(
                f"generator {name_or_spec!r} is not known; use one of: "
                f"{', '.join(list_generators())}"
            ) from None
    if spec.family != "hf_causal_lm":
        raise ConfigError(
            f"model {spec.name!r} is a {spec.family} model; a generator needs an hf_causal_lm "
            f"one: {', '.join(list_generators()[len(KINDS) :])}"
        )
    from mrag.generate.hf import TransformersGenerator

    return TransformersGenerator(
        spec,
        weights=settings.weights,
        device=settings.device,
        dtype=settings.dtype,
        max_new_tokens=settings.max_new_tokens,
        temperature=settings.temperature,
        seed=settings.seed,
    )
