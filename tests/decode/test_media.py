"""Recordings and videos through the decode stage: rows on one time axis, and every class of bad
input an ``errors`` row (or a partial result plus one), while the good files beside it decode."""

from __future__ import annotations

import numpy as np
import pytest

from mrag.config import load_config
from mrag.decode import SpeechSettings
from mrag.decode.stage import DecodeStage
from mrag.models import get_model_spec
from tests.speech_media import recording, wav_bytes
from tests.video_media import (
    BLUE,
    GREEN,
    RED,
    audio_only,
    scenes_mp4,
    subtitles_only,
    tone,
    truncated,
    unknown_codec_mp4,
    video_without_audio,
)

SENTENCE = (1.0, "The submarine cable to the island was cut by a dragging anchor.")


def _stage(keep_audio: bool = True, **ingest) -> DecodeStage:
    config = load_config(profile="offline", overrides={f"ingest.{k}": v for k, v in ingest.items()})
    return DecodeStage(
        config.ingest,
        preprocess=get_model_spec(config.clip_model).image_preprocess,
        speech=SpeechSettings(get_model_spec(config.ingest.speech_model), threads=1),
        keep_audio=keep_audio,
    )


def _decode(stage: DecodeStage, tmp_path, files: dict[str, bytes]) -> dict[str, list[dict]]:
    batch: dict[str, list] = {"uri": [], "size": [], "etag": [], "mtime": [], "fingerprint": []}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        batch["uri"].append(str(tmp_path / name))
        batch["size"].append(len(data))
        batch["etag"].append("")
        batch["mtime"].append(0.0)
        batch["fingerprint"].append(name)
    by_name: dict[str, list[dict]] = {}
    for row in stage(batch).to_pylist():
        by_name.setdefault(row["uri"].rsplit("/", 1)[-1], []).append(row)
    return by_name


def _errors(rows: list[dict]) -> list[str]:
    return [r["error_class"] for r in rows if r["error_class"]]


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return recording([SENTENCE], 8.0)


def test_a_recording_becomes_segments_with_the_speech_own_time_range(tmp_path, speech) -> None:
    rows = _decode(_stage(), tmp_path, {"talk.wav": wav_bytes(speech)})["talk.wav"]
    (segment,) = rows
    assert segment["modality"] == "audio_segment" and not segment["error_class"]
    assert "anchor" in segment["text"].lower()
    # the words' own span, not the 8-second window around them
    assert 0.5 <= segment["start_s"] <= 1.5 and 3.5 <= segment["end_s"] <= 5.5
    samples = np.frombuffer(segment["audio"], dtype=np.float32)  # the row's own span
    span_s = segment["end_s"] - segment["start_s"]
    assert len(samples) == pytest.approx(span_s * 16_000, abs=400)


def test_sentences_apart_are_rows_of_their_own(tmp_path) -> None:
    placements = [(1.0, SENTENCE[1]), (12.0, "Fresh bread is baked every morning in the village.")]
    rows = _decode(_stage(), tmp_path, {"two.wav": wav_bytes(recording(placements, 20.0))})
    first, second = sorted(rows["two.wav"], key=lambda r: r["start_s"])
    assert "anchor" in first["text"].lower() and first["end_s"] < 7
    assert "village" in second["text"].lower() and 11 <= second["start_s"] <= 13


def test_a_video_gives_keyframes_scenes_and_its_sound_on_one_time_axis(tmp_path, speech) -> None:
    video = scenes_mp4((RED, GREEN, BLUE), scene_s=2.0, audio=speech[: 6 * 16_000])
    rows = _decode(_stage(), tmp_path, {"v.mp4": video})["v.mp4"]
    assert not _errors(rows)
    scenes = sorted((r["start_s"], r["end_s"]) for r in rows if r["modality"] == "video_segment")
    assert [round(s) for s, _ in scenes] == [0, 2, 4]
    frames = [r for r in rows if r["modality"] == "video_frame"]
    assert len(frames) == 3 and all(r["pixels"] and r["thumbnail"] for r in frames)
    first_scene = next(r for r in rows if r["modality"] == "video_segment" and r["start_s"] < 1)
    assert "cable" in (first_scene["text"] or "").lower()  # spoken at 1-4.5 s: scene one's text
    (sound,) = [r for r in rows if r["modality"] == "audio_segment"]
    assert 0.5 <= sound["start_s"] <= 1.5


def test_without_a_space_for_sound_silence_makes_no_row(tmp_path) -> None:
    files = {"silence.wav": wav_bytes(np.zeros(5 * 16_000, dtype=np.float32))}
    rows = _decode(_stage(keep_audio=False), tmp_path, files)["silence.wav"]
    assert _errors(rows) == ["EmptyObject"]
    kept = _decode(_stage(keep_audio=True), tmp_path, files)["silence.wav"]
    assert [r["modality"] for r in kept] == ["audio_segment"] and kept[0]["text"] is None


def test_every_bad_media_class_is_an_error_row_and_the_good_files_still_decode(
    tmp_path, speech
) -> None:
    good_video = scenes_mp4((RED, GREEN), scene_s=2.0, audio=speech[: 4 * 16_000])
    files = {
        "good.wav": wav_bytes(speech),
        "good.m4a": audio_only(speech, kind="m4a"),  # an audio-only MP4 container
        "mute.mp4": video_without_audio(),
        "sound-only.mp4": audio_only(speech, kind="m4a"),  # a "video" with no picture
        "empty.wav": b"",
        "empty.mp4": b"",
        "garbage.mp4": b"\x00\x01not a video at all" * 50,
        "noise.wav": bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)),
        "cut.mp4": truncated(good_video, keep=0.5),
        "header-only.wav": wav_bytes(speech)[:44],
        "codec.mp4": unknown_codec_mp4(),
        "subtitles.mp4": subtitles_only(),
        "mute.wav": video_without_audio(),  # a video named .wav: no sound to transcribe
    }
    by_name = _decode(_stage(), tmp_path, files)
    assert not _errors(by_name["good.wav"]) and by_name["good.wav"][0]["text"]
    assert not _errors(by_name["good.m4a"])
    assert {r["modality"] for r in by_name["mute.mp4"]} == {"video_frame", "video_segment"}
    assert [r["modality"] for r in by_name["sound-only.mp4"]] == ["audio_segment"]
    expected = {
        "empty.wav": "EmptyObject",
        "empty.mp4": "EmptyObject",
        "garbage.mp4": "CorruptMedia",
        "noise.wav": "CorruptMedia",
        "header-only.wav": "EmptyObject",
        "codec.mp4": "UnsupportedCodec",
        "subtitles.mp4": "NoMediaStreams",
        "mute.wav": "NoAudioStream",
    }
    for name, error_class in expected.items():
        rows = by_name[name]
        assert _errors(rows) == [error_class], (name, rows[0]["error_message"])
        assert rows[0]["asset_status"] == "failed" and rows[0]["error_message"]
    cut = by_name["cut.mp4"]  # what was before the cut stays, the rest is an error row
    assert _errors(cut) == ["TruncatedMedia"]
    assert {r["asset_status"] for r in cut} == {"partial"}
    assert [r for r in cut if r["modality"] == "video_frame"]


def test_absurd_durations_and_frame_sizes_are_refused_before_decoding(tmp_path) -> None:
    long = wav_bytes(tone(3.0, freq_hz=440.0, rate=16_000))
    video = scenes_mp4((RED,), scene_s=1.0)
    rows = _decode(_stage(media_max_duration_s=1.0), tmp_path, {"long.wav": long})["long.wav"]
    assert _errors(rows) == ["MediaTooLong"]
    rows = _decode(_stage(media_max_frame_pixels=100), tmp_path, {"big.mp4": video})["big.mp4"]
    assert _errors(rows) == ["FrameTooLarge"]
    rows = _decode(_stage(max_media_bytes=100), tmp_path, {"huge.mp4": video})["huge.mp4"]
    assert _errors(rows) == ["ValueError"] and "limit" in rows[0]["error_message"]
