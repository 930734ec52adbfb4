"""Speech recognition with real Whisper weights (the packaged tiny.en) on espeak-ng speech.

Silence is cheap for the recogniser (its VAD skips it), so long recordings are mostly silence:
they test that times do not drift without costing minutes of CPU.
"""

from __future__ import annotations

import re
from itertools import pairwise

import numpy as np
import pytest

from mrag.decode.audio_windows import (
    AudioWindow,
    AudioWindower,
    transcribe_blocks,
    words_in_own_range,
)
from mrag.decode.speech import SpeechSegment, Word, create_transcriber, rms_db
from mrag.decode.speech_hf import HFWhisperTranscriber
from mrag.errors import ConfigError, WeightsNotFoundError
from mrag.models import get_model_spec
from tests.speech_media import RATE, recording, speech_span_s, spoken, wav_bytes

CABLE = "The submarine cable to the island was cut by a dragging anchor."
ELEPHANTS = "Seven purple elephants marched across the frozen lake at dawn."
BAKERY = "The bakery on the corner sells warm bread every Tuesday morning."
LIGHTHOUSE = (
    "The old lighthouse keeper climbed the spiral staircase every evening "
    "to polish the enormous brass lantern before sunset."
)


@pytest.fixture(scope="module")
def tiny_en():
    return create_transcriber(get_model_spec("whisper-tiny.en-packaged"), threads=2)


def words_of(segments: list[SpeechSegment]) -> list[str]:
    return [re.sub(r"\W", "", w.text.lower()) for s in segments for w in s.words]


def blocks_of(samples: np.ndarray, block_s: float = 0.5) -> list[tuple[float, np.ndarray]]:
    step = round(block_s * RATE)
    return [(i / RATE, samples[i : i + step]) for i in range(0, len(samples), step)]


def test_three_sentences_are_transcribed_at_their_times(tiny_en) -> None:
    placements = [(1.0, CABLE), (9.0, ELEPHANTS), (17.0, BAKERY)]
    segments = tiny_en.transcribe(recording(placements, 25.0), offset_s=100.0)

    words = words_of(segments)
    for key in ("submarine", "island", "anchor", "purple", "frozen", "lake", "corner", "tuesday"):
        assert key in words
    for (start_s, text), keys in zip(
        placements,
        [("submarine", "anchor"), ("purple", "dawn"), ("corner", "tuesday")],
        strict=True,
    ):
        first_s, last_s = speech_span_s(100.0 + start_s, text)
        for w in (
            w for s in segments for w in s.words if re.sub(r"\W", "", w.text.lower()) in keys
        ):
            assert first_s - 1.0 <= w.start_s <= w.end_s <= last_s + 1.0
    for segment in segments:  # a segment spans its words, not the silence before them
        assert segment.start_s == segment.words[0].start_s
        assert segment.end_s == segment.words[-1].end_s
        assert segment.text == " ".join(w.text for w in segment.words)


def test_late_sentence_has_no_time_drift_whole_or_windowed(tiny_en) -> None:
    total_s, at_s = 180.0, 151.3
    samples = recording([(2.0, CABLE), (at_s, ELEPHANTS)], total_s)
    first_s, last_s = speech_span_s(at_s, ELEPHANTS)

    def check(segments: list[SpeechSegment]) -> None:
        late = [w for s in segments for w in s.words if w.start_s > 100]
        assert [re.sub(r"\W", "", w.text.lower()) for w in late][-3:] == ["lake", "at", "dawn"]
        assert abs(late[0].start_s - first_s) < 1.0
        assert abs(late[-1].end_s - last_s) < 1.0
        assert "purple" in words_of(segments) and "submarine" in words_of(segments)

    check(tiny_en.transcribe(samples, offset_s=0.0))
    windowed = list(transcribe_blocks(tiny_en, blocks_of(samples, 0.64), AudioWindower()))
    check(windowed)
    assert words_of(windowed).count("purple") == 1


def test_continuous_speech_is_not_taken_for_silence(tiny_en) -> None:
    """tiny.en's no-speech probability is 0.6-0.8 on this speech: it must not drop it alone."""
    sentences = [CABLE, ELEPHANTS, BAKERY, LIGHTHOUSE] * 2
    samples = np.concatenate([spoken(text) for text in sentences])  # about 38 s, no pauses

    words = words_of(tiny_en.transcribe(samples, offset_s=0.0))

    for key in ("submarine", "purple", "corner", "spiral", "staircase", "lantern"):
        assert words.count(key) == 2, words


@pytest.mark.parametrize("noise_db", [None, -55.0])
def test_silence_and_low_noise_give_no_segments(tiny_en, noise_db: float | None) -> None:
    assert tiny_en.transcribe(recording([], 40.0, noise_db=noise_db), offset_s=0.0) == []


def test_hallucinations_that_pass_the_vad_are_dropped(tiny_en, monkeypatch) -> None:
    """Whisper's own output is stubbed with what it says in silence and in loops (seen on this
    model with the VAD off: " You" at no-speech 0.95, log-prob -0.66)."""
    from faster_whisper.transcribe import Segment
    from faster_whisper.transcribe import Word as WhisperWord

    def raw(start_s: float, text: str, avg_logprob: float = -0.3, ratio: float = 1.2) -> Segment:
        words = [
            WhisperWord(start_s + 0.4 * i, start_s + 0.4 * (i + 1), " " + word, 0.9)
            for i, word in enumerate(text.split())
        ]
        end_s = words[-1].end
        return Segment(0, 0, start_s, end_s, " " + text, [], avg_logprob, ratio, 0.7, words, 0.0)

    outputs = [
        raw(0.5, "You", avg_logprob=-0.66),  # in silence
        raw(4.0, "The submarine cable"),  # real: kept
        raw(5.2, "The submarine cable"),  # the same again
        raw(5.0, "the the the the cable"),  # a loop
        raw(6.0, "island anchor", avg_logprob=-1.4),  # not believed by the model itself
        raw(6.0, "..."),  # no words
    ]
    monkeypatch.setattr(tiny_en.model, "transcribe", lambda *a, **k: (iter(outputs), None))
    samples = recording([(4.0, CABLE)], 9.0)

    segments = tiny_en.transcribe(samples, offset_s=60.0)

    assert [(s.start_s, s.text) for s in segments] == [(64.0, "The submarine cable")]


def test_sentence_across_a_forced_cut_is_reported_once(tiny_en) -> None:
    samples = recording([(0.5, LIGHTHOUSE)], 9.5)
    windower = AudioWindower(window_s=6.0, overlap_s=1.0, search_s=1.0)
    windows = [w for start_s, b in blocks_of(samples, 0.25) for w in windower.push(start_s, b)]
    windows += windower.flush()
    cut_s = windows[0].own_end_s
    assert len(windows) == 2 and rms_db(_around(samples, cut_s, 0.5)) > -40  # inside speech

    kept = [
        s for w in windows for s in words_in_own_range(tiny_en.transcribe(w.samples, w.start_s), w)
    ]
    words = words_of(kept)
    for key in ("climbed", "spiral", "staircase", "evening", "polish", "enormous", "lantern"):
        assert words.count(key) == 1, words
    times = [(w.start_s, w.end_s) for s in kept for w in s.words]
    assert all(b[0] >= a[1] - 0.25 for a, b in pairwise(times))  # in order, none heard twice


def _around(samples: np.ndarray, at_s: float, half_s: float) -> np.ndarray:
    return samples[max(0, round((at_s - half_s) * RATE)) : round((at_s + half_s) * RATE)]


def _windows(windower: AudioWindower, blocks: list[tuple[float, np.ndarray]]) -> list[AudioWindow]:
    out = [w for start_s, b in blocks for w in windower.push(start_s, b)]
    return out + windower.flush()


def test_windows_tile_overlap_and_cut_in_silence() -> None:
    placements = [(1.0, CABLE), (7.5, ELEPHANTS), (14.0, BAKERY), (20.5, CABLE), (27.0, BAKERY)]
    samples = recording(placements, 33.0, noise_db=-70.0)
    rng = np.random.default_rng(1)
    blocks, at = [], 0
    while at < len(samples):  # uneven block sizes, as a decoder yields them
        size = int(rng.integers(300, 9000))
        blocks.append((at / RATE, samples[at : at + size]))
        at += size

    windows = _windows(AudioWindower(window_s=10.0, overlap_s=1.0, search_s=3.0), blocks)

    assert len(windows) == 5
    assert windows[0].own_start_s == 0.0 and windows[-1].own_end_s == len(samples) / RATE
    for window, after in pairwise(windows):
        assert window.own_end_s == after.own_start_s  # tiles: no gap, no overlap
        assert window.end_s - after.start_s == pytest.approx(1.0)
        assert after.start_s < window.own_end_s < window.end_s
        assert rms_db(_around(samples, window.own_end_s, 0.3)) < -65  # the cut is in silence
    for window in windows:
        assert len(window.samples) <= 10.0 * RATE
        begin = round(window.start_s * RATE)
        np.testing.assert_array_equal(window.samples, samples[begin : begin + len(window.samples)])


def test_windower_handles_jitter_gaps_and_repeats() -> None:
    tone = (0.1 * np.sin(np.arange(8 * RATE) * 0.05)).astype(np.float32)
    jitter_s = [0.0, 0.01, -0.01, 0.02, -0.02, 0.01, -0.01, 0.0]  # pts jitter, within 50 ms
    blocks = [(i * 0.5 + jitter_s[i], tone[: RATE // 2]) for i in range(8)]
    blocks.append((3.75, tone[: RATE // 2]))  # pts went back: the first 0.25 s was heard already
    blocks.append((6.0, tone[: RATE // 2]))  # a 1.75-s gap: filled with silence
    blocks.append((20.0, tone[: RATE // 2]))  # a long gap: the window closes, the next starts late
    blocks.append((2.0, tone[: RATE // 2]))  # a clock reset: taken as contiguous
    windows = _windows(AudioWindower(window_s=5.0, overlap_s=1.0, search_s=1.0), blocks)

    assert [w.own_start_s for w in windows[1:]] == [w.own_end_s for w in windows[:-1]]
    assert windows[0].own_start_s == 0.0 and windows[-1].own_end_s == 21.0
    assert windows[-1].start_s == 20.0 and windows[-1].own_start_s == 6.5
    assert max(len(w.samples) for w in windows) <= 5 * RATE
    first = windows[0].samples  # 4.0-4.25 s: the repeated block's new part; then the gap
    np.testing.assert_array_equal(
        first[4 * RATE : 4 * RATE + RATE // 4], tone[RATE // 4 : RATE // 2]
    )
    assert windows[0].own_end_s > 4.25 and not first[round(4.25 * RATE) :].any()  # cut in the gap
    assert len(windows[-1].samples) == RATE
    with pytest.raises(ConfigError, match="window_s"):
        AudioWindower(window_s=3.0, overlap_s=1.0, search_s=3.0)


def test_words_in_own_range_keeps_each_word_once() -> None:
    words = (Word(9.0, 9.6, "before"), Word(9.8, 10.4, "across"), Word(10.5, 11.0, "after"))
    segment = SpeechSegment(9.0, 11.0, "before across after", words)
    first = AudioWindow(0.0, np.zeros(round(10.5 * RATE), np.float32), 0.0, 10.0)
    second = AudioWindow(9.5, np.zeros(RATE * 5, np.float32), 10.0, 14.5)
    assert words_in_own_range([segment], first) == [SpeechSegment(9.0, 9.6, "before", words[:1])]
    assert words_in_own_range([segment], second) == [
        SpeechSegment(9.8, 11.0, "across after", words[1:])
    ]
    no_words = SpeechSegment(12.0, 13.0, "whole")
    assert words_in_own_range([no_words], first) == []
    assert words_in_own_range([no_words], second) == [no_words]


def test_random_hf_whisper_builds_offline_and_keeps_times_in_the_window() -> None:
    transcriber = create_transcriber(get_model_spec("tiny-whisper-random"), threads=2)
    assert isinstance(transcriber, HFWhisperTranscriber) and transcriber.max_new_tokens == 24
    samples = recording([(1.0, CABLE)], 30.0)

    segments = transcriber.transcribe(samples, offset_s=40.0)

    assert len(segments) > 1 and all(isinstance(s, SpeechSegment) for s in segments)
    for segment in segments:  # noise for text, but times inside the window, in order
        assert 40.0 <= segment.start_s <= segment.end_s <= 70.0 and segment.text
    assert [s.start_s for s in segments] == sorted(s.start_s for s in segments)
    assert transcriber.transcribe(np.zeros(RATE * 5, np.float32), offset_s=0.0) == []

    capped = HFWhisperTranscriber(get_model_spec("tiny-whisper-random"), max_new_tokens=4)
    few = capped.transcribe(samples, offset_s=40.0)
    text_tokens = [capped.tokenizer(s.text, add_special_tokens=False).input_ids for s in few]
    assert 0 < sum(map(len, text_tokens)) <= 4 and len(few) < len(segments)


def test_missing_hub_weights_fail_clearly_offline() -> None:
    with pytest.raises(WeightsNotFoundError) as caught:
        create_transcriber(get_model_spec("Systran/faster-whisper-small"))
    message = str(caught.value)
    assert "Systran/faster-whisper-small" in message and "HF_HUB_OFFLINE" in message
    assert "whisper-tiny.en-packaged" in message
    with pytest.raises(ConfigError, match="not a speech recogniser"):
        create_transcriber(get_model_spec("tiny-clip-random"))


def test_speech_media_helpers() -> None:
    speech = spoken(CABLE)
    assert speech.dtype == np.float32 and 3.0 < len(speech) / RATE < 5.0
    assert rms_db(speech) > -30 and rms_db(np.zeros(10, np.float32)) == -120.0
    wav = wav_bytes(speech)
    assert wav[:4] == b"RIFF" and len(wav) == 44 + 2 * len(speech)


def test_batched_decoding_the_gpu_path_gives_the_same_speech_on_cpu() -> None:
    """``batch_size`` > 1 decodes a window's speech pieces together (what a GPU runs); the same
    code on CPU hears the same sentences at the same times."""
    placements = [(1.0, CABLE), (40.0, ELEPHANTS)]
    samples = recording(placements, 60.0)
    batched = create_transcriber(
        get_model_spec("whisper-tiny.en-packaged"), threads=2, batch_size=4
    )
    assert batched._batched is not None
    segments = batched.transcribe(samples, offset_s=0.0)
    words = words_of(segments)
    for key in ("submarine", "anchor", "purple", "frozen"):
        assert key in words
    for start_s, text in placements:
        first_s, last_s = speech_span_s(start_s, text)
        inside = [s for s in segments if first_s - 1.0 <= s.start_s <= last_s]
        assert inside and inside[0].end_s <= last_s + 1.0
