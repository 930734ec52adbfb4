"""Scene cuts and keyframes on decoded test videos and on hand-made frames."""

from __future__ import annotations

import colorsys
import io

import imagehash
import numpy as np
import pytest
from PIL import Image

from mrag.decode.av_io import MediaLimits, VideoFrame, iter_media, open_media, probe
from mrag.decode.scenes import AdaptiveDetector, ContentDetector, KeyframeSampler, rgb_to_hsv
from tests import video_media as vm


def sampled_frames(data: bytes, every_s: float = 0.25) -> list[VideoFrame]:
    with open_media(io.BytesIO(data)) as container:
        info = probe(container, MediaLimits())
        items = iter_media(container, info, frame_every_s=every_s, limits=MediaLimits())
        return [item for item in items if isinstance(item, VideoFrame)]


@pytest.fixture(scope="module")
def four_scenes() -> list[VideoFrame]:
    """8 s at 10 fps, sampled every 0.25 s: red, a drifting texture, green, blue (2 s each)."""
    return sampled_frames(vm.scenes_mp4((vm.RED, "drift", vm.GREEN, vm.BLUE)))


def flat(rgb: tuple[int, int, int], size: tuple[int, int] = (120, 160)) -> np.ndarray:
    image = np.empty((*size, 3), np.uint8)
    image[:] = rgb
    return image


def noisy(image: np.ndarray, seed: int, sigma: float) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def blocks(seed: int, size: tuple[int, int] = (120, 160)) -> np.ndarray:
    """Random coloured 8x8 blocks: every call a completely different picture."""
    cells = np.random.default_rng(seed).integers(0, 256, (size[0] // 8, size[1] // 8, 3))
    return np.kron(cells, np.ones((8, 8, 1))).astype(np.uint8)


def phash_distance(a: np.ndarray, b: np.ndarray) -> int:
    return imagehash.phash(Image.fromarray(a)) - imagehash.phash(Image.fromarray(b))


def test_rgb_to_hsv_follows_opencv_8bit_conventions():
    rgb = np.random.default_rng(0).integers(0, 256, (500, 3), dtype=np.uint8)
    rgb[:3] = [(0, 0, 0), (128, 128, 128), (255, 0, 0)]
    expected = [colorsys.rgb_to_hsv(*(pixel / 255.0)) for pixel in rgb]
    expected = np.array([(h * 180.0, s * 255.0, v * 255.0) for h, s, v in expected])
    assert np.allclose(rgb_to_hsv(rgb), expected, atol=1e-3)


def test_cuts_at_scene_changes_of_a_decoded_video(four_scenes):
    detector = ContentDetector()
    starts = [f.time_s for f in four_scenes if detector.feed(f.time_s, f.image)]
    assert starts == [0.0, 2.0, 4.0, 6.0]  # exact here; within one sampled frame in general


def test_no_cut_within_slowly_changing_or_noisy_scenes():
    drift = sampled_frames(vm.scenes_mp4(("drift",), scene_s=6.0))
    detector = ContentDetector()
    scores = []
    for frame in drift:
        assert detector.feed(frame.time_s, frame.image) == (frame.time_s == 0.0)
        scores.append(detector.last_score)
    assert len(scores) == 24 and max(scores[1:]) < 27.0 / 2

    # Sensor noise on red (hue wraps around 0) and on greys (hue is undefined): linear hue
    # differences, as PySceneDetect takes them, would cut these every min_scene_s.
    for colour, sigma in ((vm.RED, 20.0), ((128, 128, 128), 20.0), ((40, 40, 40), 12.0)):
        base = vm.scene_frame(colour, 0, 0, (160, 120))
        detector = ContentDetector()
        cuts = [t for t in range(40) if detector.feed(t * 0.25, noisy(base, t, sigma))]
        assert cuts == [0], colour


def test_min_scene_s_holds_back_cuts_that_come_too_soon():
    detector = ContentDetector(min_scene_s=0.6)
    times = [i * 0.25 for i in range(13)]
    colours = [vm.RED if i % 2 else vm.BLUE for i in range(13)]  # a flash on every frame
    starts = [t for t, c in zip(times, colours, strict=True) if detector.feed(t, flat(c))]
    assert starts == [0.0, 0.75, 1.5, 2.25, 3.0]
    assert detector.last_score > 27


def test_edge_weight_sees_structure_not_brightness():
    checker = np.kron(np.indices((15, 20)).sum(axis=0) % 2, np.ones((8, 8)))[..., None]
    checker = np.repeat(checker * 200 + 20, 3, axis=-1).astype(np.uint8)
    frames = [flat((60, 60, 60)), flat((200, 200, 200)), checker]
    edges_only = ContentDetector(threshold=20.0, min_scene_s=0.0, weights=(0, 0, 0, 1))
    assert [edges_only.feed(i, f) for i, f in enumerate(frames)] == [True, False, True]
    colour_only = ContentDetector(threshold=20.0, min_scene_s=0.0)
    assert [colour_only.feed(i, f) for i, f in enumerate(frames[:2])] == [True, True]
    with pytest.raises(ValueError, match="weights"):
        ContentDetector(weights=(0, 0, 0, 0))


def test_adaptive_detector_finds_cuts_but_not_fast_motion(four_scenes):
    adaptive = AdaptiveDetector()
    starts = [adaptive.feed(f.time_s, f.image) for f in four_scenes]
    assert [t for t in starts if t is not None] == [0.0, 2.0, 4.0, 6.0]
    # Decided two frames late, once the frames after the cut are known.
    assert [i for i, t in enumerate(starts) if t is not None] == [0, 10, 18, 26]

    # Whip pans: every frame differs from the last, so a fixed threshold cuts all along.
    content, adaptive = ContentDetector(), AdaptiveDetector()
    chaos = [(i * 0.25, blocks(i)) for i in range(24)]
    assert sum(content.feed(t, image) for t, image in chaos) >= 8
    assert [adaptive.feed(t, image) for t, image in chaos] == [0.0] + [None] * 23


def test_keyframe_sampler_keeps_scene_starts_and_drops_near_duplicates():
    still = vm.scene_frame(vm.RED, 0, 0, (160, 120))
    other = blocks(7)
    near_copy = noisy(still, 1, sigma=3)
    assert phash_distance(near_copy, still) <= 6 < phash_distance(other, still)

    sampler = KeyframeSampler(every_s=5.0, max_hash_distance=6)
    offers = [(0.0, still), (1.0, other), (5.0, near_copy), (10.0, other), (12.0, still)]
    assert [sampler.offer(t, image) for t, image in offers] == [True, False, False, True, False]
    sampler.new_scene()
    assert sampler.offer(12.5, other)  # a scene's first frame is kept, even if seen before
    assert not sampler.offer(17.5, noisy(other, 2, sigma=3))
    assert sampler.offer(22.5, still)


def test_keyframes_lie_inside_their_scenes(four_scenes):
    detector, sampler = ContentDetector(), KeyframeSampler(every_s=0.5)
    scene_starts, keyframes = [], []
    for frame in four_scenes:
        if detector.feed(frame.time_s, frame.image):
            sampler.new_scene()
            scene_starts.append(frame.time_s)
        if sampler.offer(frame.time_s, frame.image):
            keyframes.append((len(scene_starts) - 1, frame.time_s))
    ends = [*scene_starts[1:], 8.0]
    assert all(scene_starts[k] <= t < ends[k] for k, t in keyframes)
    per_scene = {k: [t for j, t in keyframes if j == k] for k in range(len(scene_starts))}
    assert [times[0] for times in per_scene.values()] == scene_starts
    # Still scenes give one keyframe each; so does the drift (20 px in 2 s: phash barely moves).
    assert [len(times) for times in per_scene.values()] == [1, 1, 1, 1]
