"""Test speech made on the fly with espeak-ng: real words at known times, no audio files.

espeak-ng writes a 22.05 kHz WAV to stdout; sox resamples it to the 16 kHz float32 mono that
Whisper models take. Each (text, voice, rate) is synthesised once per process.
"""

from __future__ import annotations

import functools
import io
import subprocess
import wave

import numpy as np

RATE = 16_000


@functools.cache
def _spoken_cached(text: str, voice: str, rate_wpm: int) -> np.ndarray:
    espeak = subprocess.run(
        ["espeak-ng", "--stdout", "-v", voice, "-s", str(rate_wpm), text],
        check=True,
        capture_output=True,
    )
    sox = subprocess.run(
        [
            "sox",
            "-q",
            "-t",
            "wav",
            "-",
            "-t",
            "raw",
            "-r",
            str(RATE),
            "-e",
            "floating-point",
            "-b",
            "32",
            "-c",
            "1",
            "-",
        ],  # fmt: skip
        input=espeak.stdout,
        check=True,
        capture_output=True,
    )
    samples = np.frombuffer(sox.stdout, dtype=np.float32).copy()
    samples.setflags(write=False)
    return samples


def spoken(text: str, voice: str = "en-us", rate_wpm: int = 150) -> np.ndarray:
    """``text`` spoken by espeak-ng: float32 mono at 16 kHz (a fresh, writable copy)."""
    return _spoken_cached(text, voice, rate_wpm).copy()


def recording(
    placements: list[tuple[float, str]],
    total_s: float,
    *,
    noise_db: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Sentences spoken at the given start times (seconds) in ``total_s`` of silence.

    Args:
        placements: (start_s, text) pairs; a sentence that runs past ``total_s`` is cut.
        total_s: length of the recording.
        noise_db: add white noise at this RMS level in dBFS (e.g. -60), or none.
        seed: noise seed.
    """
    out = np.zeros(round(total_s * RATE), dtype=np.float32)
    for start_s, text in placements:
        speech = spoken(text)
        begin = round(start_s * RATE)
        end = min(len(out), begin + len(speech))
        out[begin:end] += speech[: end - begin]
    if noise_db is not None:
        rng = np.random.default_rng(seed)
        out += (10 ** (noise_db / 20) * rng.standard_normal(len(out))).astype(np.float32)
    return out


def speech_span_s(start_s: float, text: str, threshold: float = 1e-3) -> tuple[float, float]:
    """Where the audible part of ``text`` placed at ``start_s`` begins and ends (espeak pads
    its output with a little silence), for comparing recognised word times with the truth."""
    loud = np.flatnonzero(np.abs(spoken(text)) > threshold)
    return start_s + loud[0] / RATE, start_s + (loud[-1] + 1) / RATE


def wav_bytes(samples: np.ndarray, rate: int = RATE) -> bytes:
    """A 16-bit PCM mono WAV file of float samples in [-1, 1]."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return out.getvalue()
