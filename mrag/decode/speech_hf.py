"""Whisper through transformers: the ``hf_whisper`` family of speech specs (see
:mod:`mrag.decode.speech`), for users already on transformers; the random-init
``tiny-whisper-random`` builds offline and exercises the path in tests."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mrag.decode.speech import (
    _CHUNK_S,
    SAMPLE_RATE,
    SpeechSegment,
    _resolve_folder,
    rms_db,
)
from mrag.errors import ConfigError
from mrag.models import ModelSpec, random_init_parts

log = logging.getLogger(__name__)


class HFWhisperTranscriber:
    """transformers Whisper: ``generate(return_timestamps=True)`` per 30-s chunk.

    Segments come from Whisper's timestamp tokens (no word times, so ``words`` is empty). A
    window longer than 30 s is split at fixed 30-s steps; give it windows from
    :class:`AudioWindower` for cuts in silence. A window quieter than ``silence_db`` is not
    decoded (Whisper hallucinates in silence). The random-init spec builds from ``model_cfg``
    with ``seed``, borrowing the tokenizer of ``model_cfg["tokenizer_from"]``.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        weights: str = "",
        device: str = "cpu",
        dtype: str = "auto",
        threads: int = 0,
        max_new_tokens: int | None = None,
        silence_db: float = -60.0,
        seed: int = 0,
    ) -> None:
        import torch

        from mrag.embed.clip import torch_dtype

        if dtype not in ("auto", "fp32", "fp16", "bf16"):
            raise ConfigError(f"dtype {dtype!r} is not one of auto, fp32, fp16, bf16")
        if threads > 0:
            torch.set_num_threads(threads)
        cfg = spec.model_cfg or {}
        self.spec = spec
        self.device = device
        self.dtype = torch_dtype(dtype, device)
        self.max_new_tokens = max_new_tokens or int(cfg.get("max_new_tokens", 440))
        self.silence_db = silence_db
        folder = _resolve_folder(spec, weights)
        if folder is None:
            model, self.tokenizer = _random_whisper(spec, seed)
        else:
            from transformers import WhisperForConditionalGeneration, WhisperTokenizer

            self.tokenizer = WhisperTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = WhisperForConditionalGeneration.from_pretrained(
                str(folder), local_files_only=True, dtype=self.dtype
            )
        from transformers import WhisperFeatureExtractor

        self.features = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
        gen = model.generation_config
        # torch.isin over the vocabulary, as transformers suppresses tokens, takes ~0.1-0.3 s a
        # step on a busy multi-threaded CPU; index assignment does the same in microseconds.
        self._suppress = list(gen.suppress_tokens or ())
        self._begin_suppress = list(gen.begin_suppress_tokens or ())
        gen.suppress_tokens = gen.begin_suppress_tokens = None
        self.model = model.eval().to(device=device, dtype=self.dtype)

    def transcribe(self, samples: np.ndarray, offset_s: float) -> list[SpeechSegment]:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        chunk = round(_CHUNK_S * SAMPLE_RATE)
        segments: list[SpeechSegment] = []
        for begin in range(0, len(samples), chunk):
            piece = samples[begin : begin + chunk]
            if rms_db(piece) > self.silence_db:
                segments += self._transcribe_chunk(piece, offset_s + begin / SAMPLE_RATE)
        return segments

    def _transcribe_chunk(self, samples: np.ndarray, offset_s: float) -> list[SpeechSegment]:
        import torch
        from transformers import LogitsProcessorList

        duration_s = len(samples) / SAMPLE_RATE
        inputs = self.features(
            samples, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True
        )
        with torch.inference_mode():
            out = self.model.generate(
                inputs.input_features.to(self.device, self.dtype),
                attention_mask=inputs.attention_mask.to(self.device),
                return_timestamps=True,
                return_segments=True,
                max_new_tokens=self.max_new_tokens,
                logits_processor=LogitsProcessorList(
                    [_SuppressTokens(self._suppress, self._begin_suppress)]
                ),
            )
        segments = []
        for raw in out["segments"][0]:
            start_s, end_s = float(raw["start"]), float(raw["end"])
            text = self.tokenizer.decode(raw["tokens"], skip_special_tokens=True).strip()
            if not text or start_s >= duration_s:  # past the audio: padding the model misread
                continue
            end_s = min(max(end_s, start_s), duration_s)
            segments.append(SpeechSegment(offset_s + start_s, offset_s + end_s, text))
        return segments


class _SuppressTokens:
    """transformers' (begin-)suppress-tokens logits processors, by index instead of isin."""

    def __init__(self, suppress: list[int], begin_suppress: list[int]) -> None:
        self.suppress, self.begin_suppress = suppress, begin_suppress
        self.begin_len: int | None = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.begin_len is None:
            self.begin_len = input_ids.shape[-1]
        scores = scores.clone()
        vocab = scores.shape[-1]
        scores[:, [t for t in self.suppress if 0 <= t < vocab]] = -float("inf")
        if input_ids.shape[-1] == self.begin_len:
            scores[:, [t for t in self.begin_suppress if 0 <= t < vocab]] = -float("inf")
        return scores


def _random_whisper(spec: ModelSpec, seed: int) -> tuple[Any, Any]:
    """(seeded random WhisperForConditionalGeneration, tokenizer) built with no files but the
    tokenizer.json of ``model_cfg["tokenizer_from"]``; vocabulary = text + specials + the
    1501 timestamp tokens (0.00-30.00 s) that follow ``<|notimestamps|>``."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperForConditionalGeneration,
        WhisperTokenizer,
    )

    cfg = spec.model_cfg or {}
    model_config, folder = random_init_parts(spec, "WhisperConfig")
    if folder is None or not (folder / "tokenizer.json").is_file():
        raise ConfigError(f"{cfg['tokenizer_from']!r} has no tokenizer.json for {spec.name!r}")
    tokenizer = WhisperTokenizer(tokenizer_file=str(folder / "tokenizer.json"))
    ids = {
        name: tokenizer.convert_tokens_to_ids(f"<|{name}|>")
        for name in ("endoftext", "startoftranscript", "notimestamps")
    }
    config = WhisperConfig(
        **model_config,
        vocab_size=ids["notimestamps"] + 1 + 1501,
        decoder_start_token_id=ids["startoftranscript"],
        eos_token_id=ids["endoftext"],
        pad_token_id=ids["endoftext"],
        bos_token_id=ids["endoftext"],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["startoftranscript"],
        eos_token_id=ids["endoftext"],
        pad_token_id=ids["endoftext"],
        no_timestamps_token_id=ids["notimestamps"],
        is_multilingual=False,
        max_initial_timestamp_index=50,
        max_length=config.max_target_positions,
    )
    log.warning("speech model %s uses random weights (seed %d)", spec.name, seed)
    return model, tokenizer
