"""Windows of a streamed recording for speech recognition, cut at quiet points.

:class:`AudioWindower` cuts a stream of decoded blocks into windows of at most ``window_s`` at
the quietest 20-ms frame near each window's end; neighbours overlap by ``overlap_s`` around the
cut, so a word at a cut is heard whole in one of them, and :func:`words_in_own_range` keeps each
word from exactly one window. :func:`transcribe_blocks` wires them to a transcriber.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from mrag.decode.speech import SAMPLE_RATE, SpeechSegment, Transcriber, _segment_from_words
from mrag.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

log = logging.getLogger(__name__)

_FRAME_S = 0.02  # energy frame for silence-aware cuts


@dataclass(frozen=True)
class AudioWindow:
    """A window to transcribe. ``own_start_s``/``own_end_s`` is the part of the timeline this
    window answers for: the own ranges of successive windows tile the stream, and may reach
    past the samples (a gap in the stream belongs to the window after it)."""

    start_s: float
    samples: np.ndarray
    own_start_s: float
    own_end_s: float
    rate: int = SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.start_s + len(self.samples) / self.rate


class AudioWindower:
    """Cuts streamed float32 blocks into overlapping windows at quiet points.

    A window is cut once ``window_s`` of audio is buffered. The cut is the middle of the longest
    run of frames within 3 dB of the quietest 20-ms frame in the ``search_s`` before the end
    (less half the overlap); the window goes on ``overlap_s / 2`` past the cut and the next one
    starts ``overlap_s / 2`` before it, so the cut is each window's own-range boundary.

    Block start times (from pts) may jitter or jump: within ``jitter_s`` of where the stream
    should be, a block is taken as contiguous; a later start is a gap, filled with silence when
    shorter than ``max_gap_s`` and else closing the current window; an earlier start by up to
    ``max_gap_s`` repeats audio already buffered, and that part of the block is dropped; more
    than that is a clock reset, and the block is taken as contiguous. Memory: one window and
    one block (plus a gap of at most ``max_gap_s``).
    """

    def __init__(
        self,
        window_s: float = 30.0,
        overlap_s: float = 1.0,
        search_s: float = 3.0,
        rate: int = SAMPLE_RATE,
        *,
        jitter_s: float = 0.05,
        max_gap_s: float = 3.0,
    ) -> None:
        if not (window_s > overlap_s + search_s and overlap_s >= 0 and search_s >= _FRAME_S):
            raise ConfigError(
                f"window_s ({window_s}) must exceed overlap_s ({overlap_s}) + search_s "
                f"({search_s}), with overlap_s >= 0 and search_s >= {_FRAME_S}"
            )
        self.rate = rate
        self._window = round(window_s * rate)
        self._overlap = round(overlap_s * rate)
        self._search = round(search_s * rate)
        self._frame = round(_FRAME_S * rate)
        self._jitter = round(jitter_s * rate)
        self._max_gap = round(max_gap_s * rate)
        self._buf = np.empty(0, dtype=np.float32)
        self._started = False
        self._buf_start = 0  # sample index of _buf[0] on the stream's clock
        self._own_start = 0  # where the next window's own range begins

    def push(self, start_s: float, samples: np.ndarray) -> list[AudioWindow]:
        """Adds a block starting at ``start_s``; returns the windows it completed."""
        block = np.asarray(samples, dtype=np.float32).reshape(-1)
        position = round(start_s * self.rate)
        windows: list[AudioWindow] = []
        if not self._started:
            self._started, self._buf_start, self._own_start = True, position, position
        expected = self._buf_start + len(self._buf)
        if position > expected + self._jitter:
            if position - expected <= self._max_gap:
                windows += self._append(np.zeros(position - expected, dtype=np.float32))
            else:
                windows += self._close()
                self._buf_start = position  # own range keeps its start: it covers the gap
        elif expected - self._max_gap <= position < expected - self._jitter:
            block = block[expected - position :]  # already heard
        elif position < expected:  # a clock reset, not a repeat: carry on from where we are
            log.warning("audio block at %.2f s is before the stream (%.2f s)", start_s, expected)
        return windows + self._append(block)

    def flush(self) -> list[AudioWindow]:
        """The last window (its own range ends where the audio does); the windower resets."""
        windows = self._close()
        self._started = False
        return windows

    def _append(self, block: np.ndarray) -> list[AudioWindow]:
        self._buf = np.concatenate([self._buf, block]) if len(self._buf) else block.copy()
        windows = []
        while len(self._buf) >= self._window:
            windows.append(self._cut())
        return windows

    def _close(self) -> list[AudioWindow]:
        if not self._started:
            return []
        end = self._buf_start + len(self._buf)
        windows = []
        if end > self._own_start:
            windows.append(self._make(len(self._buf), end))
        self._own_start = end
        self._buf_start, self._buf = end, np.empty(0, dtype=np.float32)
        return windows

    def _cut(self) -> AudioWindow:
        half = self._overlap // 2
        after = self._overlap - half  # heard past the cut
        search_end = self._window - after
        search_start = search_end - self._search
        cut = search_start + self._quietest(self._buf[search_start:search_end])
        window = self._make(cut + after, self._buf_start + cut)
        self._own_start = self._buf_start + cut
        self._buf = self._buf[cut - half :].copy()
        self._buf_start += cut - half
        return window

    def _make(self, n_samples: int, own_end: int) -> AudioWindow:
        return AudioWindow(
            self._buf_start / self.rate,
            self._buf[:n_samples].copy(),
            self._own_start / self.rate,
            own_end / self.rate,
            self.rate,
        )

    def _quietest(self, region: np.ndarray) -> int:
        """Offset in ``region`` of the middle of its longest quiet run of frames."""
        n_frames = len(region) // self._frame
        frames = region[: n_frames * self._frame].reshape(n_frames, self._frame)
        level_db = 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-12)
        quiet = level_db <= level_db.min() + 3.0
        best_start, best_len, run_start = 0, 0, 0
        for i in range(n_frames + 1):
            if i < n_frames and quiet[i]:
                continue
            if i - run_start > best_len:
                best_start, best_len = run_start, i - run_start
            run_start = i + 1
        return (best_start * self._frame) + (best_len * self._frame) // 2


def words_in_own_range(segments: list[SpeechSegment], window: AudioWindow) -> list[SpeechSegment]:
    """The part of a window's segments it answers for: words whose midpoint is in its own range.

    A segment keeps its words in range, with text and times rebuilt from them; a segment without
    word times is kept whole when its midpoint is in range.
    """

    def mine(start_s: float, end_s: float) -> bool:
        return window.own_start_s <= (start_s + end_s) / 2 < window.own_end_s

    kept = []
    for segment in segments:
        if not segment.words:
            if mine(segment.start_s, segment.end_s):
                kept.append(segment)
            continue
        words = tuple(w for w in segment.words if mine(w.start_s, w.end_s))
        if words:
            kept.append(_segment_from_words(words))
    return kept


def transcribe_blocks(
    transcriber: Transcriber,
    blocks: Iterable[tuple[float, np.ndarray]],
    windower: AudioWindower | None = None,
) -> Iterator[SpeechSegment]:
    """Segments of a stream of (start_s, samples) blocks, each word reported once."""
    windower = windower or AudioWindower()

    def segments_of(windows: list[AudioWindow]) -> Iterator[SpeechSegment]:
        for window in windows:
            yield from words_in_own_range(
                transcriber.transcribe(window.samples, window.start_s), window
            )

    for start_s, samples in blocks:
        yield from segments_of(windower.push(start_s, samples))
    yield from segments_of(windower.flush())
