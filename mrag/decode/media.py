"""Audio and video decoders: one pass over a stream → ``audio_segment``, ``video_frame`` and
``video_segment`` rows on one time axis (seconds from the stream's pts).

- Audio (a recording, or a video's sound track) is resampled to 16 kHz mono and cut into
  windows of at most ``ingest.audio_window_s`` at quiet points (:class:`AudioWindower`); each
  window is transcribed (:mod:`mrag.decode.speech`) and becomes one ``audio_segment`` row whose
  time range is the recognised speech's own span (word times), or the window's when no speech
  was heard. Its samples travel with the row for spaces that embed sound (``needs_audio``).
- Video frames are sampled at ``ingest.video_sample_fps`` for scene detection (PySceneDetect's
  content measure, :class:`ContentDetector`); keyframes (a scene's first frame, then at most
  one per ``keyframe_every_s``, near-duplicates dropped by perceptual hash) become
  ``video_frame`` rows, and each scene a ``video_segment`` row whose pixels are up to
  ``segment_max_frames`` of its keyframes (the embedder pools them) and whose text is the
  speech heard during it.

Memory is bounded by one audio window, one scene's pooled keyframes and the transcript not yet
given to a scene, never by the file: rows are yielded as soon as they are complete.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image

from mrag.decode.audio_windows import AudioWindow, AudioWindower, words_in_own_range
from mrag.decode.av_io import AudioBlock, MediaLimits, iter_media, open_media, probe
from mrag.decode.image import model_pixels, thumbnail_jpeg
from mrag.decode.scenes import ContentDetector, KeyframeSampler
from mrag.decode.speech import Word
from mrag.errors import DecodeError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mrag.decode import DecodeContext
    from mrag.decode.av_io import VideoFrame
    from mrag.decode.speech import SpeechSegment

#: PyAV's read buffer per container: large sequential reads from s3fs's read-ahead cache.
AV_BUFFER_BYTES = 1 << 20
AUDIO_RATE = 16_000
#: Closed scenes held for their transcript at most (each holds up to segment_max_frames frames).
MAX_WAITING_SCENES = 64


def decode_audio(source: BinaryIO, context: DecodeContext) -> Iterator[dict[str, Any]]:
    """The audio kind: a recording's ``audio_segment`` rows."""
    yield from _decode(source, context, want_video=False)


def decode_video(source: BinaryIO, context: DecodeContext) -> Iterator[dict[str, Any]]:
    """The video kind: keyframes, scenes and the sound track's segments. A video without
    sound gives frames and scenes; an audio-only container gives segments only."""
    yield from _decode(source, context, want_video=True)


def _decode(source: BinaryIO, context: DecodeContext, *, want_video: bool) -> Iterator[dict]:
    ingest = context.ingest
    limits = MediaLimits(
        max_duration_s=ingest.media_max_duration_s, max_frame_pixels=ingest.media_max_frame_pixels
    )
    with open_media(
        source, buffer_size=AV_BUFFER_BYTES, threads=ingest.media_decode_threads
    ) as container:
        info = probe(container, limits)
        if not want_video and not info.has_audio:
            raise DecodeError("the file has no audio stream", error_class="NoAudioStream")
        video = _VideoPath(context) if want_video and info.has_video else None
        audio = _AudioPath(context, for_scenes=video is not None) if info.has_audio else None
        items = iter_media(
            container,
            info,
            audio_rate=AUDIO_RATE,
            frame_every_s=1.0 / ingest.video_sample_fps,
            frame_short_side_px=max(context.preprocess.size_px, ingest.thumbnail_px),
            decode_video=video is not None,
            limits=limits,
        )
        if video is not None and audio is None:
            video.heard([], float("inf"))  # no speech to wait for
        try:
            for item in items:
                if isinstance(item, AudioBlock):
                    if audio is not None:
                        yield from audio.push(item)
                        if video is not None:
                            video.heard(audio.take_segments(), audio.transcribed_until_s)
                            yield from video.ready()
                elif video is not None:
                    yield from video.push(item)
        except DecodeError:
            # What was decoded before the damage (TruncatedMedia, MediaTooLong) is kept.
            yield from _flush(audio, video)
            raise
        yield from _flush(audio, video)


def _flush(audio: _AudioPath | None, video: _VideoPath | None) -> Iterator[dict[str, Any]]:
    if audio is not None:
        yield from audio.flush()
        if video is not None:
            video.heard(audio.take_segments(), float("inf"))
    if video is not None:
        yield from video.flush()


class _AudioPath:
    """Windows → transcripts → ``audio_segment`` rows; keeps what scenes still need."""

    def __init__(self, context: DecodeContext, *, for_scenes: bool) -> None:
        ingest = context.ingest
        self.for_scenes = for_scenes  # keep the transcript for a video's scenes
        search_s = min(3.0, max(0.5, ingest.audio_window_s / 4))
        overlap_s = min(ingest.audio_overlap_s, ingest.audio_window_s - search_s - 0.1)
        self.windower = AudioWindower(ingest.audio_window_s, overlap_s, search_s, AUDIO_RATE)
        self.transcriber = context.transcriber()
        self.keep_audio = context.keep_audio
        self.chunk_s, self.gap_s = ingest.speech_chunk_s, ingest.speech_gap_s
        self.transcribed_until_s = 0.0
        self._segments: list[SpeechSegment] = []

    def push(self, block: AudioBlock) -> Iterator[dict[str, Any]]:
        for window in self.windower.push(block.start_s, block.samples):
            yield from self._rows(window)

    def flush(self) -> Iterator[dict[str, Any]]:
        for window in self.windower.flush():
            yield from self._rows(window)

    def take_segments(self) -> list[SpeechSegment]:
        taken, self._segments = self._segments, []
        return taken

    def _rows(self, window: AudioWindow) -> Iterator[dict[str, Any]]:
        """A row per run of speech in the window (sentences closer than ``speech_gap_s``, at
        most ``speech_chunk_s`` long), so a hit points at the moment something is said; a
        window without speech is one row, kept only for a space that embeds sound."""
        segments: list[SpeechSegment] = []
        if self.transcriber is not None:
            segments = words_in_own_range(
                self.transcriber.transcribe(window.samples, window.start_s), window
            )
        segments = [s for s in segments if s.text.strip()]
        self.transcribed_until_s = window.own_end_s
        if self.for_scenes:
            self._segments.extend(segments)
        if not segments:
            if self.keep_audio:
                start_s = max(window.own_start_s, window.start_s)
                yield self._row(window, start_s, min(window.own_end_s, window.end_s), None)
            return
        for run in _runs(segments, self.chunk_s, self.gap_s):
            text = " ".join(s.text.strip() for s in run)
            yield self._row(window, run[0].start_s, max(s.end_s for s in run), text)

    def _row(
        self, window: AudioWindow, start_s: float, end_s: float, text: str | None
    ) -> dict[str, Any]:
        audio = None
        if self.keep_audio:  # the row's own span of the window's samples
            first = max(0, int((start_s - window.start_s) * AUDIO_RATE))
            last = max(first + 1, int((end_s - window.start_s) * AUDIO_RATE))
            audio = window.samples[first:last].astype(np.float32).tobytes()
        return {
            "locator": f"audio={start_s:.3f}",
            "modality": "audio_segment",
            "start_s": round(float(start_s), 3),
            "end_s": round(float(max(end_s, start_s)), 3),
            "text": text,
            "audio": audio,
        }


def _runs(
    segments: list[SpeechSegment], chunk_s: float, gap_s: float
) -> Iterator[list[SpeechSegment]]:
    """Consecutive segments grouped while the gap before the next is at most ``gap_s`` and the
    group stays within ``chunk_s`` (a longer single segment is a group of its own)."""
    run: list[SpeechSegment] = []
    for segment in segments:
        if run and (
            segment.start_s - run[-1].end_s > gap_s or segment.end_s - run[0].start_s > chunk_s
        ):
            yield run
            run = []
        run.append(segment)
    if run:
        yield run


@dataclass
class _Scene:
    start_s: float
    end_s: float = 0.0
    frames: list[np.ndarray] = field(default_factory=list)  # model pixels, strided
    stride: int = 1
    offered: int = 0
    thumbnail: bytes = b""
    size: tuple[int, int] = (0, 0)


class _VideoPath:
    """Sampled frames → scene cuts and keyframes → ``video_frame`` and ``video_segment`` rows.

    A scene's row waits until the transcript has reached its end (``heard``), so its text holds
    all the speech in it; a keyframe's row waits for the next keyframe (or its scene's end),
    which closes its time range.
    """

    def __init__(self, context: DecodeContext) -> None:
        ingest = context.ingest
        self.context = context
        self.detector = ContentDetector(ingest.scene_threshold, ingest.scene_min_s)
        self.sampler = KeyframeSampler(ingest.keyframe_every_s, ingest.keyframe_hash_distance)
        self.max_frames = ingest.segment_max_frames
        self.scene: _Scene | None = None
        self.closed: list[_Scene] = []
        self.segments: list[SpeechSegment] = []
        self.heard_until_s = 0.0
        self.last_time_s = 0.0
        self.pending_frame: dict[str, Any] | None = None

    def push(self, frame: VideoFrame) -> Iterator[dict[str, Any]]:
        time_s = frame.time_s
        if self.detector.feed(time_s, frame.image):
            if self.scene is not None:
                self.scene.end_s = time_s
                self.closed.append(self.scene)
                yield from self._close_frame(time_s)
            self.scene = _Scene(start_s=time_s)
            self.sampler.new_scene()
        self.last_time_s = time_s
        if self.sampler.offer(time_s, frame.image):
            yield from self._close_frame(time_s)
            self._keyframe(time_s, frame.image)
        yield from self.ready()

    def heard(self, segments: list[SpeechSegment], until_s: float) -> None:
        self.segments.extend(segments)
        self.heard_until_s = until_s

    def ready(self) -> Iterator[dict[str, Any]]:
        """Closed scenes whose speech has all been transcribed; past :data:`MAX_WAITING_SCENES`
        the oldest goes with the speech heard so far (a sound track that stops early must not
        make a long video's scenes pile up)."""
        while self.closed and (
            self.closed[0].end_s <= self.heard_until_s or len(self.closed) > MAX_WAITING_SCENES
        ):
            yield self._scene_row(self.closed.pop(0))

    def flush(self) -> Iterator[dict[str, Any]]:
        end_s = self.last_time_s + 1.0 / self.context.ingest.video_sample_fps
        if self.scene is not None:
            self.scene.end_s = end_s
            self.closed.append(self.scene)
            self.scene = None
        yield from self._close_frame(end_s)
        self.heard_until_s = float("inf")
        yield from self.ready()

    def _keyframe(self, time_s: float, rgb: np.ndarray) -> None:
        """Makes the keyframe's row (yielded once its range is closed) and pools it."""
        preprocess, ingest = self.context.preprocess, self.context.ingest
        image = Image.fromarray(rgb)
        pixels = model_pixels(
            image, preprocess.size_px, preprocess.resize_mode, preprocess.interpolation
        )
        thumbnail = thumbnail_jpeg(image, ingest.thumbnail_px)
        scene = self.scene
        if scene is not None:
            if not scene.thumbnail:
                scene.thumbnail, scene.size = thumbnail, image.size
            # Every stride-th keyframe is pooled; when full, keep every other and double the
            # stride, so the pooled frames stay spread over the whole scene.
            if scene.offered % scene.stride == 0:
                scene.frames.append(pixels)
                if len(scene.frames) > self.max_frames:
                    scene.frames, scene.stride = scene.frames[::2], scene.stride * 2
            scene.offered += 1
        self.pending_frame = {
            "locator": f"frame={time_s:.3f}",
            "modality": "video_frame",
            "start_s": round(time_s, 3),
            "pixels": pixels.tobytes(),
            "thumbnail": thumbnail,
            "width_px": image.width,
            "height_px": image.height,
        }

    def _close_frame(self, end_s: float) -> Iterator[dict[str, Any]]:
        if self.pending_frame is not None:
            row, self.pending_frame = self.pending_frame, None
            row["end_s"] = round(max(end_s, row["start_s"]), 3)
            yield row

    def _scene_row(self, scene: _Scene) -> dict[str, Any]:
        # A scene's text is the words heard during it (by each word's midpoint; a segment
        # without word times counts whole), so a sentence across a cut is split at the cut.
        said: list[str] = []
        later: list[SpeechSegment] = []
        for segment in self.segments:
            words = segment.words or (Word(segment.start_s, segment.end_s, segment.text),)
            inside = [w for w in words if scene.start_s <= _middle(w) < scene.end_s]
            said += [w.text.strip() for w in inside if w.text.strip()]
            if any(_middle(w) >= scene.end_s for w in words):
                later.append(segment)  # some of it belongs to a later scene
        self.segments = later
        text = " ".join(said)
        return {
            "locator": f"scene={scene.start_s:.3f}",
            "modality": "video_segment",
            "start_s": round(scene.start_s, 3),
            "end_s": round(scene.end_s, 3),
            "text": text or None,
            "pixels": b"".join(f.tobytes() for f in scene.frames),
            "thumbnail": scene.thumbnail or None,
            "width_px": scene.size[0] or None,
            "height_px": scene.size[1] or None,
        }


def _middle(word: Word) -> float:
    return (word.start_s + word.end_s) / 2
