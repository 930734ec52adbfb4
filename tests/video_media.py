"""Audio/video test media encoded on the fly with PyAV: tiny, seeded, with known content.

Every generator returns the file's bytes. Scenes are visually distinct (a colour, a shape at a
scene-specific place, light noise); a tone starts at a known time; odd files (moov at the end,
cut-off, rate or resolution changing mid-stream, cover art, unknown codec) are real encodes.
"""

from __future__ import annotations

import io
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

RED, GREEN, BLUE = (220, 30, 30), (30, 200, 60), (40, 60, 220)
Scene = tuple[int, int, int] | str  # an RGB colour, or "drift": a slowly panning texture


def scene_frame(
    scene: Scene, scene_index: int, frame_index: int, size: tuple[int, int]
) -> np.ndarray:
    """One RGB frame (H, W, 3) uint8: colour + scene-specific shape, or the drifting texture."""
    width, height = size
    rng = np.random.default_rng(1000 * scene_index + frame_index)
    ys, xs = np.mgrid[0:height, 0:width]
    if scene == "drift":  # broad stripes moving 1 px per frame: never a cut
        phase = (xs + frame_index) / 23.0 + ys / 31.0
        grey = 90 + 60 * np.sin(phase)
        image = np.stack([grey, grey * 0.8 + 30, 160 - grey * 0.5], axis=-1)
    else:
        image = np.empty((height, width, 3), np.float64)
        image[:] = scene
        # A bright disc whose place depends on the scene, so scenes differ in layout too.
        cx = width * (0.25 + 0.25 * (scene_index % 3))
        cy = height * (0.3 + 0.2 * (scene_index % 2))
        image[(xs - cx) ** 2 + (ys - cy) ** 2 < (height / 5) ** 2] = (250, 250, 250)
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def tone(
    duration_s: float,
    *,
    start_s: float = 0.0,
    freq_hz: float = 440.0,
    rate: int = 16000,
    amplitude: float = 0.5,
) -> np.ndarray:
    """Silence until ``start_s``, then a sine: mono float32."""
    t = np.arange(int(round(duration_s * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t) * (t >= start_s)).astype(np.float32)


def _encode_audio(container, stream, samples: np.ndarray, rate: int, ctx=None, t0_s=0.0) -> None:
    """Encodes mono float32 ``samples`` into ``stream`` in encoder-sized frames.

    ``ctx`` is the stream's own encoder unless given (a second encoder with another rate or
    layout, whose packets go into the same stream); its first sample is at ``t0_s``.
    """
    ctx = ctx or stream.codec_context
    if not ctx.is_open:
        ctx.open()  # frame_size is known only once the encoder is open
    step = ctx.frame_size or 1024
    resampler = av.AudioResampler(
        format=ctx.format, layout=ctx.layout, rate=ctx.sample_rate, frame_size=ctx.frame_size
    )
    pts0 = round(t0_s * rate)

    def emit(frames) -> None:
        for frame in frames:
            for packet in ctx.encode(frame):
                packet.stream = stream
                container.mux(packet)

    for start in range(0, len(samples), step):
        frame = av.AudioFrame.from_ndarray(
            samples[None, start : start + step], format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = rate, pts0 + start, Fraction(1, rate)
        emit(resampler.resample(frame))
    emit(resampler.resample(None))
    emit([None])


def _video_stream(container, fps: int, size: tuple[int, int], codec: str = "libx264"):
    stream = container.add_stream(codec, rate=fps, options={"preset": "veryfast"})
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    return stream


def _encode_frames(container, stream, images, fps: int, pts0: int = 0, codec_context=None):
    ctx = codec_context or stream.codec_context
    for i, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts0 + i, Fraction(1, fps)
        for packet in ctx.encode(frame):
            packet.stream = stream
            container.mux(packet)
    for packet in ctx.encode(None):
        packet.stream = stream
        container.mux(packet)


def scenes_mp4(
    scenes: Sequence[Scene] = (RED, GREEN, BLUE),
    scene_s: float = 2.0,
    fps: int = 10,
    size: tuple[int, int] = (160, 120),
    audio: np.ndarray | None = None,
    audio_rate: int = 16000,
    faststart: bool = True,
    *,
    audio_start_s: float = 0.0,
    rotation_deg: int = 0,
    sample_aspect_ratio: Fraction | None = None,
    images: Sequence[np.ndarray] | None = None,
) -> bytes:
    """H.264 (with B-frames) + optional AAC mono in MP4; scene k spans [k*scene_s, (k+1)*scene_s).

    ``faststart=False`` leaves the moov atom at the end (the mp4 muxer's default); faststart
    needs a real file, because the muxer re-reads it to move the atom to the front.
    The audio track starts at ``audio_start_s`` (a late track, as after a muted intro);
    ``images`` replaces the generated scenes with the caller's frames.
    """
    if images is None:
        per_scene = int(round(scene_s * fps))
        images = [
            scene_frame(scene, k, i, size)
            for k, scene in enumerate(scenes)
            for i in range(per_scene)
        ]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.mp4"
        options = {"movflags": "faststart"} if faststart else {}
        with av.open(str(path), "w", format="mp4", options=options) as out:
            video = _video_stream(out, fps, (images[0].shape[1], images[0].shape[0]))
            if sample_aspect_ratio is not None:
                video.codec_context.sample_aspect_ratio = sample_aspect_ratio
            if rotation_deg:
                video.set_display_rotation(rotation_deg)
            sound = (
                out.add_stream("aac", rate=audio_rate, layout="mono") if audio is not None else None
            )
            _encode_frames(out, video, images, fps)
            if sound is not None:
                _encode_audio(out, sound, audio, audio_rate, t0_s=audio_start_s)
        return path.read_bytes()


def video_without_audio(scenes: Sequence[Scene] = (RED, GREEN), **kwargs) -> bytes:
    return scenes_mp4(scenes, audio=None, **kwargs)


def audio_only(samples: np.ndarray, rate: int = 16000, kind: str = "wav") -> bytes:
    """Mono audio alone: ``"wav"`` (PCM s16, sample-exact) or ``"m4a"`` (AAC in MP4)."""
    codec, fmt = {"wav": ("pcm_s16le", "wav"), "m4a": ("aac", "ipod")}[kind]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        _encode_audio(out, out.add_stream(codec, rate=rate, layout="mono"), samples, rate)
    return buf.getvalue()


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    """The first ``keep`` fraction of a file, as an interrupted upload leaves it."""
    return data[: int(len(data) * keep)]


AudioSegment = tuple[int, str, float]  # sample rate, layout, tone frequency


def rate_change_audio(
    segments: Sequence[AudioSegment] = ((32000, "mono", 440.0), (48000, "stereo", 1000.0)),
    segment_s: float = 1.0,
    container: str = "mpegts",
) -> bytes:
    """Audio whose sample rate and channel layout change mid-stream; one tone per segment.

    ``"mpegts"``: one MPEG-1 Layer II stream written by one encoder per segment (each frame
    header carries its rate; the muxer stamps true pts). ``"adts"``: raw AAC files back to back
    (as naive concatenation or some radio streams give). Containers with one global header
    (MP4, WAV) cannot change rate mid-file, so there is no such MP4 here.
    """
    if container == "adts":
        parts = []
        for rate, layout, freq_hz in segments:
            buf = io.BytesIO()
            with av.open(buf, "w", format="adts") as out:
                stream = out.add_stream("aac", rate=rate, layout=layout)
                _encode_audio(out, stream, tone(segment_s, freq_hz=freq_hz, rate=rate), rate)
            parts.append(buf.getvalue())
        return b"".join(parts)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        rate, layout, _ = segments[0]
        stream = out.add_stream("mp2", rate=rate, layout=layout)
        for k, (rate, layout, freq_hz) in enumerate(segments):
            ctx = None
            if k:
                ctx = av.CodecContext.create("mp2", "w")
                ctx.sample_rate, ctx.layout, ctx.format = rate, layout, "s16"
                ctx.time_base = Fraction(1, rate)
            samples = tone(segment_s, freq_hz=freq_hz, rate=rate)
            _encode_audio(out, stream, samples, rate, ctx, t0_s=k * segment_s)
    return buf.getvalue()


def resolution_change_ts(
    sizes: Sequence[tuple[int, int]] = ((160, 120), (96, 128)),
    segment_s: float = 1.0,
    fps: int = 10,
) -> bytes:
    """MPEG-TS with one H.264 stream whose frame size changes (as with adaptive streaming).

    Each segment is its own encoder; TS carries SPS in-band, so the decoder sees the change.
    Segment k is a grey of level 40 + 60 k with the colour scene's disc.
    """
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        stream = _video_stream(out, fps, sizes[0])
        pts0 = 0
        for k, (width, height) in enumerate(sizes):
            ctx = stream.codec_context
            if k:
                ctx = av.CodecContext.create("libx264", "w")
                ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
                ctx.time_base, ctx.framerate = Fraction(1, fps), Fraction(fps)
            count = int(round(segment_s * fps))
            level = 40 + 60 * k
            images = [scene_frame((level,) * 3, k, i, (width, height)) for i in range(count)]
            _encode_frames(out, stream, images, fps, pts0, ctx)
            pts0 += count
    return buf.getvalue()


def cover_art_mp3(samples: np.ndarray, rate: int = 16000) -> bytes:
    """MP3 with an embedded cover picture: FFmpeg shows the picture as a one-frame video stream."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as out:
        sound = out.add_stream("libmp3lame", rate=rate, layout="mono")
        cover = out.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        art = scene_frame(RED, 0, 0, (64, 64))
        _encode_frames(out, cover, [art], 1)
        _encode_audio(out, sound, samples, rate)
    return buf.getvalue()


def unknown_codec_mp4() -> bytes:
    """An MP4 whose video sample entry names a codec no FFmpeg build knows (fourcc ``zzz9``)."""
    return scenes_mp4((RED,), scene_s=1.0, faststart=False).replace(b"avc1", b"zzz9")


def subtitles_only() -> bytes:
    """An SRT file: FFmpeg opens it as a container with one subtitle stream and nothing else."""
    return b"1\n00:00:00,000 --> 00:00:01,000\nhello\n\n2\n00:00:01,000 --> 00:00:02,000\nworld\n\n"
