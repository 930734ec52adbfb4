"""PyAV decoding: one pass, pts times, odd layouts, bad files, limits — on real encodes."""

from __future__ import annotations

import io
from fractions import Fraction
from itertools import pairwise

import numpy as np
import pytest

from mrag.decode.av_io import (
    AudioBlock,
    MediaInfo,
    MediaLimits,
    VideoFrame,
    iter_media,
    open_media,
    probe,
)
from mrag.errors import DecodeError
from tests import video_media as vm

RATE = 16000
SCENE_TIMES_S = [round(i / 10, 1) for i in range(60)]  # 10 fps, 6 s
# One frame per 0.25 s slot: the first frame at or after each slot start.
SAMPLED_TIMES_S = sorted({min(t for t in SCENE_TIMES_S if t >= k * 0.25 - 1e-9) for k in range(24)})


@pytest.fixture(scope="module")
def scenes_with_tone() -> bytes:
    """6 s: red, green, blue scenes of 2 s; silence, then 440 Hz from 1.5 s."""
    return vm.scenes_mp4(audio=vm.tone(6.0, start_s=1.5, rate=RATE), audio_rate=RATE)


def decode(
    source, limits: MediaLimits | None = None, **kwargs
) -> tuple[MediaInfo, list[AudioBlock], list[VideoFrame], DecodeError | None]:
    """Everything iter_media yields, and the error it ended with (None for a clean end)."""
    items: list = []
    error = None
    with open_media(io.BytesIO(source) if isinstance(source, bytes) else source) as container:
        info = probe(container, MediaLimits())
        try:
            for item in iter_media(container, info, limits=limits or MediaLimits(), **kwargs):
                items.append(item)
        except DecodeError as exc:
            error = exc
    blocks = [i for i in items if isinstance(i, AudioBlock)]
    frames = [i for i in items if isinstance(i, VideoFrame)]
    assert len(blocks) + len(frames) == len(items)
    return info, blocks, frames, error


def placed(blocks: list[AudioBlock], rate: int = RATE) -> np.ndarray:
    """The samples laid out by their start times (gaps stay silent)."""
    end = max(round(b.start_s * rate) + len(b.samples) for b in blocks)
    signal = np.zeros(end, np.float32)
    for block in blocks:
        start = round(block.start_s * rate)
        signal[start : start + len(block.samples)] = block.samples
    return signal


def dominant_hz(signal: np.ndarray, start_s: float, end_s: float, rate: int = RATE) -> float:
    part = signal[int(start_s * rate) : int(end_s * rate)]
    spectrum = np.abs(np.fft.rfft(part * np.hanning(len(part))))
    return float(np.argmax(spectrum) * rate / len(part))


def gaps_s(blocks: list[AudioBlock], rate: int = RATE) -> np.ndarray:
    return np.array([b.start_s - (a.start_s + len(a.samples) / rate) for a, b in pairwise(blocks)])


def median_rgb(frame: VideoFrame) -> np.ndarray:
    return np.median(frame.image.reshape(-1, 3), axis=0)


def test_one_pass_yields_tone_and_scenes_at_their_pts_times(scenes_with_tone):
    with open_media(io.BytesIO(scenes_with_tone)) as container:
        info = probe(container, MediaLimits())
        items = list(iter_media(container, info, limits=MediaLimits()))
    assert info == MediaInfo(6.0, True, True, 160, 120, 10.0, RATE, "h264", "aac")
    # File order: audio and video interleave instead of one stream after the other.
    times = [i.start_s if isinstance(i, AudioBlock) else i.time_s for i in items]
    assert max(a - b for a, b in pairwise(times)) < 0.3
    frames = [i for i in items if isinstance(i, VideoFrame)]
    assert [f.time_s for f in frames] == pytest.approx(SAMPLED_TIMES_S)
    for frame in frames:
        assert frame.image.shape == (120, 160, 3) and frame.image.dtype == np.uint8
        colour = (vm.RED, vm.GREEN, vm.BLUE)[int(frame.time_s // 2)]
        assert np.abs(median_rgb(frame) - colour).max() < 20, frame.time_s

    blocks = [i for i in items if isinstance(i, AudioBlock)]
    assert all(b.samples.dtype == np.float32 and b.samples.ndim == 1 for b in blocks)
    assert np.abs(gaps_s(blocks)).max() < 1e-3  # contiguous, from pts
    signal = placed(blocks)
    assert len(signal) / RATE == pytest.approx(6.0, abs=0.07)
    onset_s = np.argmax(np.abs(signal) > 0.1) / RATE
    assert onset_s == pytest.approx(1.5, abs=0.03)
    assert np.abs(signal[: int(1.4 * RATE)]).max() < 0.05
    assert dominant_hz(signal, 2.0, 3.0) == pytest.approx(440, abs=3)
    assert np.sqrt(np.mean(signal[2 * RATE : 5 * RATE] ** 2)) == pytest.approx(
        0.5 / 2**0.5, rel=0.1
    )


def test_audio_track_starting_late_keeps_its_place():
    """Times come from pts, not from counting samples: a track that starts at 1 s stays there."""
    data = vm.scenes_mp4((vm.RED,), audio=vm.tone(1.0, freq_hz=440.0), audio_start_s=1.0)
    info, blocks, frames, error = decode(data)
    assert error is None and frames[0].time_s == 0.0
    assert 0.9 <= blocks[0].start_s <= 1.0  # AAC's encoder delay: a frame before the tone
    signal = placed(blocks)
    assert np.argmax(np.abs(signal) > 0.1) / RATE == pytest.approx(1.0, abs=0.03)
    assert len(signal) / RATE == pytest.approx(2.0, abs=0.07)


@pytest.mark.parametrize("faststart", [True, False], ids=["moov-first", "moov-last"])
@pytest.mark.parametrize("reader", ["bytesio", "file"])
def test_mp4_decodes_from_plain_file_objects_wherever_the_moov_is(faststart, reader, tmp_path):
    data = vm.scenes_mp4(audio=vm.tone(6.0, start_s=1.5), faststart=faststart)
    assert (data.find(b"moov") < data.find(b"mdat")) == faststart
    if reader == "bytesio":
        info, blocks, frames, error = decode(io.BytesIO(data))
    else:
        (tmp_path / "clip.mp4").write_bytes(data)
        with open(tmp_path / "clip.mp4", "rb") as file:
            info, blocks, frames, error = decode(file)
    assert error is None and info.has_audio and info.duration_s == 6.0
    assert [f.time_s for f in frames] == pytest.approx(SAMPLED_TIMES_S)
    assert sum(len(b.samples) for b in blocks) / RATE == pytest.approx(6.0, abs=0.07)


def test_zero_bytes_is_an_empty_object(tmp_path):
    (tmp_path / "empty.mp4").write_bytes(b"")
    for source in (io.BytesIO(b""), str(tmp_path / "empty.mp4")):
        with pytest.raises(DecodeError) as caught, open_media(source):
            pass
        assert caught.value.error_class == "EmptyObject"


def test_not_media_is_corrupt_media(scenes_with_tone):
    garbage = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    moov_last = vm.scenes_mp4(faststart=False)
    for data in (garbage, b"just some text, not a video\n" * 20, vm.truncated(moov_last, 0.8)):
        with pytest.raises(DecodeError) as caught, open_media(io.BytesIO(data)):
            pass
        assert caught.value.error_class == "CorruptMedia"
        assert "not a decodable audio/video file" in str(caught.value)


def test_truncated_mp4_yields_what_precedes_the_cut_then_fails(scenes_with_tone):
    _, all_blocks, all_frames, _ = decode(scenes_with_tone)
    _, blocks, frames, error = decode(vm.truncated(scenes_with_tone, 0.5))
    assert error is not None and error.error_class == "TruncatedMedia"
    assert 1.0 < frames[-1].time_s < 5.0 and len(frames) >= 5
    for got, full in zip(
        frames, all_frames, strict=False
    ):  # the good part is exactly what a full decode gives
        assert got.time_s == full.time_s and np.array_equal(got.image, full.image)
    assert len(blocks) >= 10
    for got, full in zip(
        blocks[:-2], all_blocks, strict=False
    ):  # the resampler's flush may end differently
        assert got.start_s == full.start_s and np.allclose(got.samples, full.samples, atol=1e-6)


def test_truncated_wav_is_detected_by_its_partial_last_packet():
    """PCM decodes anything, so the cut shows only as FFmpeg's "corrupt" (partial) last packet."""
    samples = vm.tone(2.0, freq_hz=300.0)
    _, blocks, _, error = decode(vm.truncated(vm.audio_only(samples, kind="wav"), 0.5))
    assert error is not None and error.error_class == "TruncatedMedia"
    signal = placed(blocks)
    assert len(signal) / RATE == pytest.approx(1.0, abs=0.07)
    assert np.abs(signal - samples[: len(signal)]).max() < 1e-4


def test_truncated_mpegts_cannot_be_told_from_a_short_one():
    """MPEG-TS has no index or declared length: a cut-off file simply ends (a known limit)."""
    data = vm.resolution_change_ts()
    _, _, all_frames, _ = decode(data)
    _, _, frames, error = decode(vm.truncated(data, 0.5))
    assert error is None and 2 <= len(frames) < len(all_frames)
    assert [f.time_s for f in frames] == [f.time_s for f in all_frames[: len(frames)]]


def test_headers_over_the_limits_are_refused_before_decoding(scenes_with_tone):
    cases = {
        "MediaTooLong": MediaLimits(max_duration_s=1.0),
        "FrameTooLarge": MediaLimits(max_frame_pixels=160 * 120 - 1),
    }
    for error_class, limits in cases.items():
        with open_media(io.BytesIO(scenes_with_tone)) as container:
            with pytest.raises(DecodeError) as caught:
                probe(container, limits)
        assert caught.value.error_class == error_class
    with open_media(io.BytesIO(vm.rate_change_audio())) as container:  # stereo after 1 s
        assert probe(container, MediaLimits(max_audio_channels=1)).has_audio  # starts mono


def test_limits_are_enforced_on_pts_while_decoding(scenes_with_tone):
    """Headers can lie or be missing: pts, frame sizes and channels are checked as they come."""
    _, blocks, frames, error = decode(scenes_with_tone, MediaLimits(max_duration_s=1.0))
    assert error.error_class == "MediaTooLong"
    assert frames[-1].time_s == 1.0 and blocks[-1].start_s <= 1.0

    grows = vm.resolution_change_ts(sizes=((96, 72), (160, 120)))
    _, _, frames, error = decode(grows, MediaLimits(max_frame_pixels=96 * 72))
    assert error.error_class == "FrameTooLarge"
    assert [f.image.shape for f in frames] == [(72, 96, 3)] * 4

    _, blocks, _, error = decode(vm.rate_change_audio(), MediaLimits(max_audio_channels=1))
    assert error.error_class == "TooManyAudioChannels"
    assert 0.9 < blocks[-1].start_s < 1.1


def test_video_without_audio():
    info, blocks, frames, error = decode(vm.video_without_audio((vm.RED, vm.GREEN)))
    assert error is None and blocks == []
    assert (info.has_audio, info.has_video, info.audio_codec) == (False, True, None)
    assert [f.time_s for f in frames] == pytest.approx(SAMPLED_TIMES_S[:16])


def test_audio_alone_from_a_video_file(scenes_with_tone):
    _, all_blocks, _, _ = decode(scenes_with_tone)
    _, blocks, frames, error = decode(scenes_with_tone, decode_video=False)
    assert error is None and frames == []
    assert [b.start_s for b in blocks] == [b.start_s for b in all_blocks]


def test_audio_only_wav_is_sample_exact_and_m4a_is_close():
    samples = vm.tone(1.0, start_s=0.25, freq_hz=300.0)
    info, blocks, frames, error = decode(vm.audio_only(samples, kind="wav"))
    assert error is None and frames == []
    assert (info.has_video, info.audio_codec, info.audio_rate) == (False, "pcm_s16le", RATE)
    assert blocks[0].start_s == 0.0 and np.abs(gaps_s(blocks)).max() < 1e-9
    assert np.abs(placed(blocks) - samples).max() < 1e-4  # 16-bit quantisation only

    info, blocks, frames, error = decode(vm.audio_only(samples, kind="m4a"))
    assert error is None and frames == [] and info.audio_codec == "aac"
    signal = placed(blocks)
    assert np.argmax(np.abs(signal) > 0.1) / RATE == pytest.approx(0.25, abs=0.03)
    assert dominant_hz(signal, 0.4, 0.9) == pytest.approx(300, abs=3)


def test_cover_art_is_not_a_video_stream():
    info, blocks, frames, error = decode(vm.cover_art_mp3(vm.tone(1.0, freq_hz=500.0)))
    assert error is None and frames == []
    assert (info.has_audio, info.has_video, info.audio_codec) == (True, False, "mp3float")
    assert dominant_hz(placed(blocks), 0.2, 0.8) == pytest.approx(500, abs=3)


def test_resolution_change_mid_stream():
    data = vm.resolution_change_ts(sizes=((160, 120), (96, 128)))
    info, _, frames, error = decode(data)
    assert error is None and (info.width, info.height) == (160, 120)
    assert [f.time_s for f in frames] == pytest.approx(SAMPLED_TIMES_S[:8])
    assert [f.image.shape for f in frames] == [(120, 160, 3)] * 4 + [(128, 96, 3)] * 4
    assert [float(np.median(f.image)) for f in frames] == pytest.approx([40] * 4 + [100] * 4, abs=4)

    _, _, frames, _ = decode(data, frame_short_side_px=64)
    assert [f.image.shape for f in frames] == [(64, 85, 3)] * 4 + [(85, 64, 3)] * 4


def test_sample_rate_and_layout_change_mid_stream():
    """32 kHz mono at 440 Hz, then 48 kHz stereo at 1000 Hz, in one MPEG-TS audio stream."""
    info, blocks, _, error = decode(vm.rate_change_audio())
    assert error is None and info.audio_rate == 32000 and info.audio_codec == "mp3float"
    signal = placed(blocks)
    assert dominant_hz(signal, 0.2, 0.9) == pytest.approx(440, abs=3)
    assert dominant_hz(signal, 1.2, 1.9) == pytest.approx(1000, abs=3)
    assert len(signal) / RATE == pytest.approx(2.0, abs=0.06)
    # Times come from pts: contiguous within each segment; FFmpeg's decoder emits one
    # transition frame at the switch, which overlaps its neighbour by a few tens of ms.
    gaps = gaps_s(blocks)
    assert np.sum(np.abs(gaps) > 1e-3) <= 2 and np.abs(gaps).max() < 0.06


def test_adts_rate_change_keeps_every_sample():
    """Raw AAC back to back: FFmpeg's ADTS demuxer stamps pts at the first rate's frame length,
    so times drift after the switch; the samples are all there and nothing crashes."""
    _, blocks, _, error = decode(vm.rate_change_audio(container="adts"))
    assert error is None
    signal = np.concatenate([b.samples for b in blocks])
    assert len(signal) / RATE == pytest.approx(2.05, abs=0.05)
    assert dominant_hz(signal, 0.2, 0.9) == pytest.approx(440, abs=3)
    assert dominant_hz(signal, 1.2, 1.9) == pytest.approx(1000, abs=3)
    starts = [b.start_s for b in blocks]
    assert starts == sorted(starts) and starts[0] == 0.0


def test_unsupported_codec_and_no_media_streams():
    for data, error_class in (
        (vm.unknown_codec_mp4(), "UnsupportedCodec"),
        (vm.subtitles_only(), "NoMediaStreams"),
    ):
        with open_media(io.BytesIO(data)) as container:
            with pytest.raises(DecodeError) as caught:
                probe(container, MediaLimits())
        assert caught.value.error_class == error_class


def test_rotation_and_sample_aspect_ratio_are_applied():
    image = np.zeros((60, 80, 3), np.uint8)
    image[:30, :40] = 255  # white top-left quarter
    rotated = vm.scenes_mp4(images=[image] * 3, rotation_deg=90)
    frame = decode(rotated)[2][0]
    assert frame.image.shape == (80, 60, 3)  # shown turned 90° counter-clockwise: portrait
    quarters = [frame.image[:40, :30], frame.image[40:, :30], frame.image[:40, 30:]]
    assert [int(q.mean() > 128) for q in quarters] == [0, 1, 0]  # top-left went bottom-left

    wide = vm.scenes_mp4(images=[image] * 3, sample_aspect_ratio=Fraction(2, 1))
    frame = decode(wide)[2][0]
    assert frame.image.shape == (60, 160, 3)  # 80 px stored, 160 px displayed
    assert frame.image[:30, :80].mean() > 200 and frame.image[:30, 80:].mean() < 50


def test_every_frame_when_frame_every_s_is_none(scenes_with_tone):
    _, _, frames, _ = decode(scenes_with_tone, frame_every_s=None, frame_short_side_px=32)
    assert [f.time_s for f in frames] == pytest.approx(SCENE_TIMES_S)
    assert {f.image.shape for f in frames} == {(32, 43, 3)}


def test_open_media_bounds_threads_and_closes_on_errors(scenes_with_tone):
    with pytest.raises(ValueError, match="threads"), open_media(io.BytesIO(b"x"), threads=0):
        pass
    with pytest.raises(RuntimeError, match="caller failed"):
        with open_media(io.BytesIO(scenes_with_tone), threads=2) as container:
            contexts = [s.codec_context for s in container.streams]
            assert [(c.thread_count, c.thread_type.name) for c in contexts] == [(2, "SLICE")] * 2
            raise RuntimeError("caller failed")
    with pytest.raises(AssertionError, match="not open"):  # PyAV's own check on a closed file
        next(container.demux())
