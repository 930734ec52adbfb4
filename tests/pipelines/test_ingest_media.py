"""Audio and video end to end: a folder (and a bucket) of recordings and videos → ingest →
a spoken phrase found with its time range, a frame of a scene found inside that scene, every
bad file in ``errors``, a re-run that adds nothing, and an answer that cites the moment."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from mrag.config import load_config
from mrag.pipelines.ingest import run_ingest
from mrag.query import QueryEngine
from mrag.store import schema
from mrag.store.lance import Store
from tests.media import encode
from tests.speech_media import recording, wav_bytes
from tests.video_media import BLUE, GREEN, RED, scene_frame, scenes_mp4, truncated

if TYPE_CHECKING:
    import numpy as np

pytestmark = pytest.mark.integration

#: (start_s, sentence) spoken in talk.wav, far apart so each lands in its own window.
TALK = [
    (2.0, "The submarine cable to the island was cut by a dragging anchor."),
    (40.0, "Our orchard grows pears, plums and seven kinds of apples."),
]
TALK_S = 50.0
#: Spoken over the video's three scenes (3 s each): one sentence in scene two.
NARRATION = [(3.4, "The old sailor painted the wooden door.")]
SCENE_S = 3.0
VIDEO_SIZE = (160, 120)

GOOD = ("talk.wav", "scenes.mp4", "silent.mp4")
BAD = {"empty.wav": "EmptyObject", "broken.mp4": "TruncatedMedia"}


def media_folder() -> dict[str, bytes]:
    narration = recording(NARRATION, 3 * SCENE_S)
    video = scenes_mp4((RED, GREEN, BLUE), scene_s=SCENE_S, size=VIDEO_SIZE, audio=narration)
    return {
        "talk.wav": wav_bytes(recording(TALK, TALK_S)),
        "scenes.mp4": video,
        # the index at the end, as most cameras and encoders write it
        "silent.mp4": scenes_mp4((BLUE, RED), scene_s=2.0, size=VIDEO_SIZE, faststart=False),
        "broken.mp4": truncated(video, keep=0.5),
        "empty.wav": b"",
    }


def _ingest(config, source: str):
    summary = run_ingest(config, [source])
    return summary, Store(config.db_uri)


def _check_tables(store: Store, prefix: str) -> None:
    assets = {r["uri"]: r["status"] for r in store.read(schema.ASSETS).to_pylist()}
    for name in GOOD:
        assert assets[f"{prefix}{name}"] == "ok", name
    assert assets[f"{prefix}empty.wav"] == "failed"
    # cut in the middle: the scenes before the cut are kept, the rest is an error row
    assert assets[f"{prefix}broken.mp4"] == "partial"
    errors = {r["uri"]: r["error_class"] for r in store.read(schema.ERRORS).to_pylist()}
    assert errors == {f"{prefix}{name}": cls for name, cls in BAD.items()}
    chunks = store.read(schema.CHUNKS).to_pylist()
    by_uri: dict[str, list[dict]] = {}
    for row in chunks:
        by_uri.setdefault(row["uri"], []).append(row)
    video = by_uri[f"{prefix}scenes.mp4"]
    scenes = sorted((r["start_s"], r["end_s"]) for r in video if r["modality"] == "video_segment")
    assert len(scenes) == 3
    for (start, end), k in zip(scenes, range(3), strict=True):  # cuts at the colour changes
        assert abs(start - k * SCENE_S) <= 0.3 and abs(end - (k + 1) * SCENE_S) <= 0.35
    narrated = [r for r in video if r["modality"] == "video_segment" and r["text"]]
    assert len(narrated) == 1 and "painted" in narrated[0]["text"].lower()
    assert SCENE_S - 0.3 <= narrated[0]["start_s"] < 2 * SCENE_S
    for row in video:
        assert row["start_s"] is not None and row["end_s"] >= row["start_s"]
        if row["modality"] in ("video_frame", "video_segment"):
            assert row["clip"] is not None and row["thumbnail"]
    spoken = [r for r in video if r["modality"] == "audio_segment" and r["text"]]
    assert spoken and all(r["text_vec"] is not None for r in spoken)
    silent = by_uri[f"{prefix}silent.mp4"]
    assert {r["modality"] for r in silent} == {"video_frame", "video_segment"}
    broken = by_uri[f"{prefix}broken.mp4"]
    assert broken and max(r["end_s"] for r in broken) < 3 * SCENE_S


def _check_search(config, prefix: str) -> None:
    engine = QueryEngine.for_config(config)
    for start_s, sentence in TALK:
        hits = engine.search("cable to the island cut by an anchor" if start_s < 10 else
                             "pears plums and apples in the orchard", k=3)  # fmt: skip
        top = hits[0]
        assert top.uri == f"{prefix}talk.wav" and top.modality == "audio_segment"
        # the range is the speech's own span: it holds the sentence, not the whole window
        duration = len(sentence.split()) / 2.5
        assert top.start_s <= start_s + 0.8 and top.end_s >= start_s + duration - 1.5
        assert top.end_s - top.start_s < 15
    frame = scene_frame(GREEN, 1, 5, VIDEO_SIZE)
    hits = engine.search(None, image=encode(_image(frame), "PNG"), k=4)
    # broken.mp4 is the same video cut in half: its scene two is as good a match
    assert hits[0].uri in (f"{prefix}scenes.mp4", f"{prefix}broken.mp4")
    top = next(h for h in hits if h.uri == f"{prefix}scenes.mp4")
    assert top.modality in ("video_frame", "video_segment")
    for hit in (hits[0], top):
        assert SCENE_S - 0.3 <= hit.start_s and hit.end_s <= 2 * SCENE_S + 0.35
    filtered = engine.search("sailor painted a door", k=5, filters={"time_range": [0.0, 2.5]})
    assert all(h.start_s is not None and h.start_s <= 2.5 for h in filtered)


def _image(pixels: np.ndarray):
    from PIL import Image

    return Image.fromarray(pixels)


def test_a_folder_of_recordings_and_videos(ray_local, tmp_path) -> None:
    root = tmp_path / "media"
    root.mkdir()
    for name, data in media_folder().items():
        (root / name).write_bytes(data)
    config = load_config(profile="offline", overrides={"db_uri": str(tmp_path / "db")})
    summary, store = _ingest(config, str(root))
    assert summary.ingested == len(GOOD) + 1  # the broken video counts, partially
    assert summary.failed == {"EmptyObject": 1}
    assert summary.partial == {"TruncatedMedia": 1}
    _check_tables(store, f"{root}/")
    _check_search(config, f"{root}/")
    before = store.open(schema.CHUNKS).count_rows()
    again, _ = _ingest(config, str(root))
    assert (again.ingested, again.skipped) == (0, len(GOOD) + len(BAD))
    assert store.open(schema.CHUNKS).count_rows() == before

    from mrag import ask

    result = ask("What was cut by a dragging anchor?", config)
    cited = [e for e in result.evidence if e.n in {c.n for c in result.citations}]
    assert any(e.uri == f"{root}/talk.wav" and e.start_s is not None for e in cited)
    assert any("00:0" in e.citation() for e in cited)


def test_the_same_from_a_bucket(ray_local, s3_bucket, tmp_path) -> None:
    import boto3

    client = boto3.client("s3")
    for name, data in media_folder().items():
        client.put_object(Bucket=s3_bucket, Key=f"media/{name}", Body=data)
    config = load_config(profile="offline", overrides={"db_uri": str(tmp_path / "db")})
    summary, store = _ingest(config, f"s3://{s3_bucket}/media/")
    assert summary.failed == {"EmptyObject": 1} and summary.partial == {"TruncatedMedia": 1}
    _check_tables(store, f"s3://{s3_bucket}/media/")
    _check_search(config, f"s3://{s3_bucket}/media/")
    again, _ = _ingest(config, f"s3://{s3_bucket}/media/")
    assert again.ingested == 0
