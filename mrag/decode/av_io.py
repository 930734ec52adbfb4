"""Streaming audio/video decoding with PyAV: one demux pass, bounded memory, typed errors.

Audio and video are decoded in a single pass (``container.demux``), so an object opened as a
seekable file is read once whatever its layout (``moov`` atom first or last). Memory is bounded
by what the caller keeps: FFmpeg's frames become small numpy arrays at once and are dropped.
Failures are :class:`~mrag.errors.DecodeError` with an ``error_class`` (``EmptyObject``,
``CorruptMedia``, ``NoMediaStreams``, ``UnsupportedCodec``, ``MediaTooLong``, ``FrameTooLarge``,
``TooManyAudioChannels``, ``TruncatedMedia``); a truncated file first yields what precedes the
damage. Times are seconds from pts × time_base minus the container's start time: one origin
for both streams keeps them in sync when MPEG-TS starts its streams at different offsets.
"""

from __future__ import annotations

import gc
import math
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import av
import numpy as np

from mrag.errors import DecodeError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from av.audio.stream import AudioStream
    from av.container import InputContainer
    from av.video.stream import VideoStream

# PITFALLS: decoded frames pile up on long runs unless the cycle collector runs now and then.
_GC_EVERY_FRAMES = 1024
_quiet_lock = threading.Lock()
_quiet = False


@dataclass(frozen=True)
class MediaLimits:
    """Refusal limits, checked on the headers before decoding and again while decoding."""

    max_duration_s: float = 4 * 3600
    max_frame_pixels: int = 8192 * 8192  # width * height of one coded frame
    max_audio_channels: int = 64


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float | None  # None when neither the container nor a stream declares it
    has_audio: bool
    has_video: bool
    width: int | None  # coded size of the first video frames
    height: int | None
    fps: float | None
    audio_rate: int | None  # the source's sample rate, before resampling
    video_codec: str | None
    audio_codec: str | None


@dataclass(frozen=True)
class AudioBlock:
    start_s: float  # from the frame's pts
    samples: np.ndarray  # (n,) float32 mono at the requested rate


@dataclass(frozen=True)
class VideoFrame:
    time_s: float  # from the frame's pts
    image: np.ndarray  # (height, width, 3) uint8 RGB, as displayed (aspect ratio, rotation)


def _refuse(message: str, error_class: str) -> DecodeError:
    return DecodeError(message, error_class=error_class)


def _check_pixels(width: int, height: int, limits: MediaLimits) -> None:
    if width * height > limits.max_frame_pixels:
        msg = f"video frames are {width}x{height}, over the {limits.max_frame_pixels} pixel limit"
        raise _refuse(msg, "FrameTooLarge")


def _check_channels(channels: int, limits: MediaLimits) -> None:
    if channels > limits.max_audio_channels:
        msg = f"audio has {channels} channels, over the {limits.max_audio_channels} limit"
        raise _refuse(msg, "TooManyAudioChannels")


def _silence_ffmpeg() -> None:
    """FFmpeg's log callback calls into Python from decoder threads and can deadlock (PyAV
    issues 751, 909): off, once, on first use rather than at import."""
    global _quiet
    with _quiet_lock:
        if not _quiet:
            av.logging.set_level(None)
            _quiet = True


def _size_bytes(source: BinaryIO | str) -> int | None:
    if isinstance(source, str):
        return os.path.getsize(source)
    if not getattr(source, "seekable", lambda: False)():
        return None
    here = source.tell()
    end = source.seek(0, os.SEEK_END)
    source.seek(here)
    return end - here


@contextmanager
def open_media(
    source: BinaryIO | str, *, buffer_size: int = 1 << 20, threads: int = 1
) -> Iterator[InputContainer]:
    """Opens a seekable file object (or a path); the container is closed on exit, also on
    exceptions (PyAV leaks containers otherwise, worst with file objects).

    Decoders get ``threads`` slice threads: FFmpeg's default, a frame thread per core, fights
    torch's pools, and frame threading can hang a decoder abandoned before its end
    (tao-pytorch PR 109, vLLM issue 53973).
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    _silence_ffmpeg()
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if _size_bytes(source) == 0:
        raise _refuse("object is empty (0 bytes)", "EmptyObject")
    try:
        container = av.open(source, mode="r", buffer_size=buffer_size)
    except av.error.FFmpegError as exc:
        msg = f"not a decodable audio/video file (unknown format or damaged header): {exc}"
        raise _refuse(msg, "CorruptMedia") from None
    try:
        for stream in container.streams:
            if stream.type in ("audio", "video") and stream.codec_context is not None:
                stream.codec_context.thread_type = "SLICE"
                stream.codec_context.thread_count = threads
        yield container
    finally:
        container.close()


def _pick_streams(container: InputContainer) -> tuple[AudioStream | None, VideoStream | None]:
    """The first audio stream and the first video stream that is not cover art."""
    audio = next(iter(container.streams.audio), None)
    cover_art = av.stream.Disposition.attached_pic
    video = next((s for s in container.streams.video if not s.disposition & cover_art), None)
    return audio, video


def probe(container: InputContainer, limits: MediaLimits) -> MediaInfo:
    """Reads what the headers declare and refuses what ``limits`` forbid, before decoding."""
    audio, video = _pick_streams(container)
    if audio is None and video is None:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise _refuse(f"no audio or video stream (streams: {kinds})", "NoMediaStreams")
    for stream in (audio, video):
        if stream is not None and stream.codec_context is None:
            msg = f"no decoder for the {stream.type} stream's codec (unknown, or header damaged)"
            raise _refuse(msg, "UnsupportedCodec")
    if container.duration is not None:
        duration_s = container.duration / av.time_base
    else:
        declared = [float(s.duration * s.time_base) for s in (audio, video) if s and s.duration]
        duration_s = max(declared, default=None)
    if duration_s is not None and duration_s > limits.max_duration_s:
        msg = f"media lasts {duration_s:.0f} s, over the {limits.max_duration_s:.0f} s limit"
        raise _refuse(msg, "MediaTooLong")
    video_ctx = video.codec_context if video is not None else None
    audio_ctx = audio.codec_context if audio is not None else None
    fps = None
    if video_ctx is not None:
        _check_pixels(video_ctx.width, video_ctx.height, limits)
        rate = video.average_rate or video.guessed_rate
        fps = float(rate) if rate else None
    if audio_ctx is not None:
        _check_channels(audio_ctx.channels, limits)
    return MediaInfo(
        duration_s=duration_s,
        has_audio=audio is not None,
        has_video=video is not None,
        width=video_ctx.width if video_ctx else None,
        height=video_ctx.height if video_ctx else None,
        fps=fps,
        audio_rate=audio_ctx.sample_rate if audio_ctx else None,
        video_codec=video_ctx.name if video_ctx else None,
        audio_codec=audio_ctx.name if audio_ctx else None,
    )


def iter_media(
    container: InputContainer,
    info: MediaInfo,
    *,
    audio_rate: int = 16000,
    frame_every_s: float | None = 0.25,
    frame_short_side_px: int = 256,
    decode_video: bool = True,
    limits: MediaLimits,
) -> Iterator[AudioBlock | VideoFrame]:
    """Yields audio blocks and sampled frames in file order, from one demux pass.

    Audio: one :class:`AudioBlock` per decoded frame, resampled to mono ``audio_rate``.
    Video: at most one frame per ``frame_every_s`` slot of pts time (``None``: every frame),
    scaled so its short side is ``frame_short_side_px`` or the source's, whichever is smaller
    (never upscaled: small sources stay small). ``decode_video=False`` leaves the video stream
    undemuxed (audio-only use of a video file). Rate, layout and frame size may change mid-file.

    Raises:
        DecodeError: ``TruncatedMedia`` once everything before the damage was yielded;
            ``MediaTooLong`` / ``FrameTooLarge`` / ``TooManyAudioChannels`` when pts, frame
            sizes or layouts pass ``limits`` (headers can lie or say nothing).
    """
    audio, video = _pick_streams(container)
    if not decode_video:
        video = None
    streams = [s for s in (audio, video) if s is not None]
    if container.start_time is not None:
        origin_s = container.start_time / av.time_base
    else:
        starts = [float(s.start_time * s.time_base) for s in streams if s.start_time is not None]
        origin_s = min(starts, default=0.0)
    audio_track = _AudioTrack(audio_rate, origin_s, limits)
    frame_s = 1.0 / info.fps if info.fps else 0.0
    sampler = _FrameSampler(video, origin_s, frame_every_s, frame_short_side_px, frame_s, limits)
    packets = container.demux(*streams)
    decoded, last_good_s = 0, 0.0
    failure: Exception | None = None
    tail_corrupt = False
    while True:
        try:
            packet = next(packets)
            frames = packet.decode()
        except StopIteration:
            break
        except av.error.FFmpegError as exc:
            failure = exc
            break
        if packet.size:
            tail_corrupt = packet.is_corrupt  # a partial packet: the file may end right here
        for frame in frames:
            decoded += 1
            if decoded % _GC_EVERY_FRAMES == 0:
                gc.collect()
            if frame.time is not None:
                last_good_s = frame.time - origin_s
                if last_good_s > limits.max_duration_s:
                    msg = f"media runs past the {limits.max_duration_s:.0f} s limit"
                    raise _refuse(msg, "MediaTooLong")
            if isinstance(frame, av.AudioFrame):
                yield from audio_track.push(frame)
            elif picked := sampler.push(frame):
                yield picked
    yield from audio_track.flush()
    if failure is not None or tail_corrupt:
        reason = failure or "the last packet is incomplete"
        msg = f"media is truncated or damaged after {last_good_s:.2f} s: {reason}"
        raise _refuse(msg, "TruncatedMedia")


@dataclass
class _AudioTrack:
    """Resamples to mono float32, with a new resampler whenever the source format changes:
    PyAV's refuses such a change (or ignores it, when it started as a passthrough)."""

    rate: int
    origin_s: float
    limits: MediaLimits
    resampler: av.AudioResampler | None = None
    source_format: tuple[str, str, int] | None = None
    next_s: float = 0.0  # used only when the source has no pts at all

    def push(self, frame: av.AudioFrame) -> list[AudioBlock]:
        source_format = (frame.format.name, frame.layout.name, frame.sample_rate)
        blocks = []
        if source_format != self.source_format:
            _check_channels(len(frame.layout.channels), self.limits)
            blocks = self.flush()
            self.resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
            self.source_format = source_format
        return blocks + self._blocks(self.resampler.resample(frame))

    def flush(self) -> list[AudioBlock]:
        if self.resampler is None:
            return []
        blocks = self._blocks(self.resampler.resample(None))
        self.resampler, self.source_format = None, None
        return blocks

    def _blocks(self, frames: list[av.AudioFrame]) -> list[AudioBlock]:
        blocks = []
        for out in frames:
            samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=True)
            # The resampler carries pts through, its delay included; without pts, count on.
            start_s = max(0.0, out.time - self.origin_s) if out.time is not None else self.next_s
            self.next_s = start_s + len(samples) / self.rate
            blocks.append(AudioBlock(start_s, samples))
        return blocks


@dataclass
class _FrameSampler:
    """Picks frames on a grid of ``every_s`` slots and scales them with swscale."""

    stream: VideoStream | None
    origin_s: float
    every_s: float | None
    short_side_px: int
    frame_s: float  # one frame period, for streams without pts
    limits: MediaLimits
    next_due_s: float = -math.inf
    last_s: float | None = None

    def push(self, frame: av.VideoFrame) -> VideoFrame | None:
        _check_pixels(frame.width, frame.height, self.limits)
        if frame.time is not None:
            time_s = max(0.0, frame.time - self.origin_s)
        else:
            time_s = 0.0 if self.last_s is None else self.last_s + self.frame_s
        self.last_s = time_s
        if self.every_s is not None:
            if time_s < self.next_due_s - 1e-6:
                return None  # skipped before any pixel conversion: that is the saving
            self.next_due_s = (math.floor(time_s / self.every_s + 1e-6) + 1) * self.every_s
        return VideoFrame(time_s, self._rgb(frame))

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        sar = self.stream.codec_context.sample_aspect_ratio  # anamorphic DVD/broadcast video
        display_w = frame.width * float(sar) if sar else float(frame.width)
        short = min(display_w, frame.height)
        scale = min(self.short_side_px, short) / short
        width, height = max(1, round(display_w * scale)), max(1, round(frame.height * scale))
        image = frame.reformat(width=width, height=height, format="rgb24", interpolation="AREA")
        pixels = image.to_ndarray()
        turns = round(frame.rotation / 90) % 4  # display matrix, counter-clockwise degrees
        return np.ascontiguousarray(np.rot90(pixels, turns) if turns else pixels.copy())
