"""Scene boundaries and keyframe choice for sampled video frames, in numpy (no OpenCV).

:class:`ContentDetector` is PySceneDetect's ContentDetector measure (scenedetect needs
opencv-python, which mrag does not carry): each frame is shrunk to a 64-px-wide working copy,
converted to HSV with OpenCV's 8-bit conventions (H in 0-179, S and V in 0-255), and the score
is the weighted mean of the mean absolute H, S, V (and optionally edge-map) differences from
the previous frame, in 0-255 units, so PySceneDetect's threshold of 27 carries over. One
deliberate change: the hue difference is the distance on the colour circle in degrees (0-180,
the range of PySceneDetect's linear difference) weighted by the lower saturation of the two
pixels. PySceneDetect subtracts hues linearly, so red (hue 179 next to 0) and grey (hue
undefined) surfaces with light noise score like cuts: on a red frame with sensor noise of
sigma 8, linear hue scores 28 and this measure 3; the test videos' real cuts score 45-80.

:class:`AdaptiveDetector` is PySceneDetect's adaptive variant (a frame's score over its
neighbours' mean), which tolerates fast motion. :class:`KeyframeSampler` picks a scene's first
frame and then at most one frame per ``every_s``, skipping near-duplicates by perceptual hash,
so a static talk does not fill the index with copies. All are fed frames one at a time and keep
only small state, so memory stays constant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import imagehash
import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from collections.abc import Sequence

_WORK_WIDTH_PX = 64


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB → (..., 3) float32 HSV as OpenCV's ``COLOR_RGB2HSV`` on 8-bit images.

    H is in degrees halved (0-179), S and V in 0-255; gray pixels get H = 0.
    """
    rgb = rgb.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    delta = value - rgb.min(axis=-1)
    saturation = np.where(value > 0, delta / np.maximum(value, 1e-6) * 255.0, 0.0)
    safe = np.maximum(delta, 1e-6)
    hue = np.where(
        value == r, (g - b) / safe, np.where(value == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe)
    )
    hue = np.where(delta > 0, (hue * 60.0) % 360.0, 0.0) / 2.0
    return np.stack([hue, saturation, value], axis=-1).astype(np.float32)


def _edges(value: np.ndarray) -> np.ndarray:
    """A cheap stand-in for PySceneDetect's dilated Canny map: 1 where the V gradient is strong.

    The threshold is PySceneDetect's Canny high threshold (median brightness × 4/3) divided by 8,
    because a Sobel magnitude is about 8 times a central difference; it is floored so noise on
    flat frames is no edge. Dilating by one pixel keeps a one-pixel shift from counting.
    """
    grad_y, grad_x = np.gradient(value)
    magnitude = np.hypot(grad_x, grad_y)
    strong = magnitude >= max(float(np.median(value)) * 4 / 3 / 8, 4.0)
    padded = np.pad(strong, 1)
    height, width = strong.shape
    dilated = np.zeros_like(strong)
    for dy in range(3):
        for dx in range(3):
            dilated |= padded[dy : dy + height, dx : dx + width]
    return dilated.astype(np.float32)


class _FrameDifference:
    """PySceneDetect's content score between consecutive frames (0-255 units)."""

    def __init__(self, weights: Sequence[float]) -> None:
        if len(weights) != 4 or sum(abs(w) for w in weights) == 0:
            raise ValueError(f"weights must be 4 numbers (H, S, V, edges), not all 0: {weights}")
        self.weights = np.array(weights, dtype=np.float32)
        self._work_size: tuple[int, int] | None = None
        self._previous: np.ndarray | None = None

    def _planes(self, rgb: np.ndarray) -> np.ndarray:
        """H, S, V (and edges) of a small copy; the copy's size is fixed by the first frame so
        frames stay comparable across a resolution change."""
        if self._work_size is None:
            height, width = rgb.shape[:2]
            work_width = min(width, _WORK_WIDTH_PX)
            self._work_size = (work_width, max(1, round(height * work_width / width)))
        small = np.asarray(Image.fromarray(rgb).resize(self._work_size, Image.Resampling.BOX))
        hsv = rgb_to_hsv(small)
        planes = [hsv[..., 0], hsv[..., 1], hsv[..., 2]]
        if self.weights[3]:
            planes.append(_edges(hsv[..., 2]) * 255.0)
        return np.stack(planes)

    def score(self, rgb: np.ndarray) -> float | None:
        """The difference from the previous frame; None for the first frame."""
        planes = self._planes(rgb)
        previous, self._previous = self._previous, planes
        if previous is None:
            return None
        differences = np.abs(planes - previous)
        # Hue: degrees around the circle, and only as far as the pixels have any colour.
        hue_deg = np.minimum(differences[0], 180.0 - differences[0]) * 2.0
        differences[0] = hue_deg * np.minimum(planes[1], previous[1]) / 255.0
        deltas = differences.mean(axis=(1, 2))
        weights = self.weights[: len(deltas)]
        return float(np.dot(weights, deltas) / np.abs(self.weights).sum())


class ContentDetector:
    """Finds hard cuts in a stream of frames, one :meth:`feed` at a time.

    Args:
        threshold: score (0-255 units) at or above which a frame starts a new scene.
        min_scene_s: a cut sooner than this after the scene's start is ignored, so flashes
            and fast pans do not shatter a scene (PySceneDetect's older "suppress" behaviour;
            its newer default merges such cuts instead).
        weights: weights of the H, S, V and edge differences (PySceneDetect's defaults).
    """

    def __init__(
        self,
        threshold: float = 27.0,
        min_scene_s: float = 0.6,
        weights: Sequence[float] = (1.0, 1.0, 1.0, 0.0),
    ) -> None:
        self.threshold = threshold
        self.min_scene_s = min_scene_s
        self.last_score: float | None = None  # the last frame's score, for tuning and tests
        self._difference = _FrameDifference(weights)
        self._scene_start_s: float | None = None

    def feed(self, time_s: float, rgb: np.ndarray) -> bool:
        """Takes the next frame ((H, W, 3) uint8 RGB, times increasing).

        Returns True when a new scene starts at this frame, including the very first frame
        (the first scene starts there), so callers can start a scene on every True.
        """
        self.last_score = self._difference.score(rgb)
        if self._scene_start_s is None:
            self._scene_start_s = time_s
            return True
        if self.last_score >= self.threshold and time_s - self._scene_start_s >= self.min_scene_s:
            self._scene_start_s = time_s
            return True
        return False


class AdaptiveDetector:
    """PySceneDetect's AdaptiveDetector: a frame's score against its neighbours' average.

    Fast motion raises every frame's score, so a fixed threshold cuts all through it; the
    ratio of a frame's score to the mean score of ``window`` frames on each side stays near 1
    there and jumps only at a real cut. The ratio needs frames after the cut, so decisions come
    ``window`` frames late: :meth:`feed` returns the time of the frame that starts a scene.

    Args:
        adaptive_threshold: ratio at or above which a frame starts a new scene.
        min_content_val: the frame's own score must reach this too (0-255 units).
        window: frames on each side in the average (PySceneDetect's ``window_width``).
    """

    def __init__(
        self,
        adaptive_threshold: float = 3.0,
        min_scene_s: float = 0.6,
        window: int = 2,
        min_content_val: float = 15.0,
        weights: Sequence[float] = (1.0, 1.0, 1.0, 0.0),
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.adaptive_threshold = adaptive_threshold
        self.min_scene_s = min_scene_s
        self.window = window
        self.min_content_val = min_content_val
        self._difference = _FrameDifference(weights)
        self._recent: list[tuple[float, float]] = []  # (time_s, score), 2 * window + 1 at most
        self._scene_start_s: float | None = None

    def feed(self, time_s: float, rgb: np.ndarray) -> float | None:
        """Takes the next frame; returns the start time of a new scene decided now, if any.

        The first frame returns its own time (the first scene starts there); later scene
        starts are frames ``window`` frames before this one.
        """
        score = self._difference.score(rgb)
        if self._scene_start_s is None:
            self._scene_start_s = time_s
            return time_s
        self._recent = [*self._recent[-2 * self.window :], (time_s, score)]
        if len(self._recent) < 2 * self.window + 1:
            return None
        centre_s, centre_score = self._recent[self.window]
        around = [s for i, (_, s) in enumerate(self._recent) if i != self.window]
        average = sum(around) / len(around)
        ratio = min(centre_score / average, 255.0) if average > 1e-5 else 255.0
        if (
            ratio >= self.adaptive_threshold
            and centre_score >= self.min_content_val
            and centre_s - self._scene_start_s >= self.min_scene_s
        ):
            self._scene_start_s = centre_s
            return centre_s
        return None


class KeyframeSampler:
    """Chooses keyframes inside a scene: its first frame, then at most one per ``every_s``.

    A candidate whose perceptual hash (``imagehash.phash``, 64 bits) is within
    ``max_hash_distance`` bits of the scene's last kept keyframe is dropped; either way the
    next candidate is ``every_s`` later, so a long static scene costs one hash per ``every_s``.
    """

    def __init__(self, every_s: float = 5.0, max_hash_distance: int = 6) -> None:
        self.every_s = every_s
        self.max_hash_distance = max_hash_distance
        self.new_scene()

    def new_scene(self) -> None:
        """The next offered frame starts a scene and is always kept."""
        self._last_hash: imagehash.ImageHash | None = None
        self._next_due_s: float | None = None

    def offer(self, time_s: float, rgb: np.ndarray) -> bool:
        """Returns True when the frame ((H, W, 3) uint8 RGB) should be a keyframe."""
        if self._next_due_s is not None and time_s < self._next_due_s:
            return False
        self._next_due_s = time_s + self.every_s
        frame_hash = imagehash.phash(Image.fromarray(rgb))
        if self._last_hash is not None and frame_hash - self._last_hash <= self.max_hash_distance:
            return False
        self._last_hash = frame_hash
        return True
