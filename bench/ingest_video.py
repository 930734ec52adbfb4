"""Video and audio ingest benchmark: decode rate and memory of the decoding worker for a 1-minute
and a 10-minute video, and the audio path's real-time factor end to end against the bare
recogniser's.

    .venv/bin/python bench/ingest_video.py [--short-s 60] [--long-s 600]

The videos are generated here (PyAV: 320x240 H.264 at 25 fps, a new scene every 8 s, an AAC
track of espeak-ng sentences every 12 s). Each one is decoded by the ingest's own decode stage
(:class:`mrag.decode.stage.DecodeStage`, speech recognition on, as in a decode task) in a fresh
process, which reports decoded frames/s and its peak RSS (``ru_maxrss``); a bounded decoder
keeps the 10-minute peak near the 1-minute one. The audio path is measured end to end: the two
sound tracks as WAV files through ``run_ingest`` (local Ray, offline profile: decode, windows,
packaged Whisper tiny.en, text and audio embeddings, commits; Ray's start-up excluded), in
seconds of audio per second of job, beside the same recogniser alone on the same files (2
threads, VAD on, word times), once per whole file and once over the job's windows: the faster
of the two is the bare rate. The last line is
``peak_rss_ratio=<10-min peak / 1-min peak>``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

FPS = 25
SIZE = (320, 240)
SCENE_S = 8.0
SENTENCE_EVERY_S = 12.0
SENTENCES = (
    "The submarine cable to the island was cut by a dragging anchor.",
    "Fresh bread is baked every morning in the village square.",
    "The committee will meet again on the first Tuesday of March.",
    "Seven kinds of apples grow in the orchard behind the school.",
)


def make_media(folder: Path, duration_s: float) -> tuple[Path, Path]:
    """A video with scenes and a speech track, and the same track as a WAV file."""
    import av

    from mrag.pipelines import demo_media

    placements = [
        (t, SENTENCES[i % len(SENTENCES)])
        for i, t in enumerate(np.arange(1.0, duration_s - 6, SENTENCE_EVERY_S))
    ]
    audio = demo_media.speech(placements, duration_s)
    wav = folder / f"talk-{int(duration_s)}s.wav"
    wav.write_bytes(demo_media.wav_bytes(audio))
    video = folder / f"video-{int(duration_s)}s.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(video), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        sound = out.add_stream("aac", rate=demo_media.RATE, layout="mono")
        for i in range(int(duration_s * FPS)):
            scene = int(i / FPS // SCENE_S)
            colour = np.random.default_rng(scene).integers(0, 256, 3, dtype=np.uint8)
            image = np.empty((SIZE[1], SIZE[0], 3), dtype=np.uint8)
            image[:] = colour
            x = (i * 3) % (SIZE[0] - 40)  # something moves inside a scene
            image[100:140, x : x + 40] = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode(None))
        pts = 0
        for start in range(0, len(audio), 1024):
            block = audio[start : start + 1024].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
            frame.sample_rate, frame.pts = demo_media.RATE, pts
            pts += block.shape[1]
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    return video, wav


#: Runs in a fresh process: one decode task's work on one video, then its peak RSS.
_DECODE_WORKER = """
import json, resource, sys, time
from mrag.config import load_config
from mrag.decode import SpeechSettings
from mrag.decode.stage import DecodeStage
from mrag.models import get_model_spec
config = load_config(profile="offline")
stage = DecodeStage(
    config.ingest,
    preprocess=get_model_spec(config.clip_model).image_preprocess,
    speech=SpeechSettings(get_model_spec(config.ingest.speech_model), threads=1),
    keep_audio=True,
)
path = sys.argv[1]
batch = {"uri": [path], "size": [0], "etag": [""], "mtime": [0.0], "fingerprint": ["x"]}
started = time.perf_counter()
rows = stage(batch)
elapsed = time.perf_counter() - started
print(json.dumps({"elapsed_s": elapsed, "rows": rows.num_rows,
                  "errors": [e for e in rows["error_class"].to_pylist() if e],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def decode_worker(video: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _DECODE_WORKER, str(video)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def bare_recogniser_rates(wavs: list[Path]) -> tuple[float, float]:
    """Seconds of audio per second of the recogniser alone (2 threads, the machine's best), on
    whole files (faster-whisper's own long-audio path) and on the job's 30-s windows."""
    import wave

    from mrag.config import load_config
    from mrag.decode.audio_windows import AudioWindower
    from mrag.decode.speech import create_transcriber
    from mrag.models import get_model_spec

    config = load_config(profile="offline")
    transcriber = create_transcriber(get_model_spec(config.ingest.speech_model), threads=2)
    transcriber.transcribe(np.zeros(16_000, dtype=np.float32), 0.0)  # load and warm up
    audio_s = whole_s = windowed_s = 0.0
    for path in wavs:
        with wave.open(str(path)) as reader:
            pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
        samples = pcm.astype(np.float32) / 32768.0
        audio_s += len(samples) / 16_000
        started = time.perf_counter()
        transcriber.transcribe(samples, 0.0)
        whole_s += time.perf_counter() - started
        windower = AudioWindower(config.ingest.audio_window_s, config.ingest.audio_overlap_s)
        started = time.perf_counter()
        for window in [*windower.push(0.0, samples), *windower.flush()]:
            transcriber.transcribe(window.samples, window.start_s)
        windowed_s += time.perf_counter() - started
    return audio_s / whole_s, audio_s / windowed_s


def job_rate(wavs: list[Path], work: Path) -> tuple[float, float]:
    """Seconds of audio per second of ``run_ingest`` (Ray start-up excluded), and the job's s."""
    import wave

    import ray

    from mrag.config import load_config
    from mrag.pipelines.ingest import run_ingest

    audio_s = 0.0
    for path in wavs:
        with wave.open(str(path)) as reader:
            audio_s += reader.getnframes() / reader.getframerate()
    folder = work / "audio"
    folder.mkdir()
    for path in wavs:
        (folder / path.name).write_bytes(path.read_bytes())
    config = load_config(profile="offline", overrides={"db_uri": str(work / "db")})
    summary = run_ingest(config, [str(folder)], progress=False)
    ray.shutdown()
    if summary.failed:
        raise RuntimeError(f"the job failed objects: {summary.failed}")
    return audio_s / summary.elapsed_s, summary.elapsed_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short-s", type=float, default=60.0)
    parser.add_argument("--long-s", type=float, default=600.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        made = {label: make_media(work, s) for label, s in (("short", args.short_s),
                                                             ("long", args.long_s))}  # fmt: skip
        peaks = {}
        for label, seconds in (("short", args.short_s), ("long", args.long_s)):
            result = decode_worker(made[label][0])
            if result["errors"]:
                raise RuntimeError(f"decoding the {label} video failed: {result['errors']}")
            frames = seconds * FPS
            peaks[label] = result["peak_rss_mb"]
            print(
                f"{seconds / 60:.0f}-min video: {frames / result['elapsed_s']:.0f} decoded "
                f"frames/s ({seconds / result['elapsed_s']:.1f}x real time, speech recognised, "
                f"{result['rows']} rows), decoding worker peak RSS {result['peak_rss_mb']:.0f} MiB"
            )
        wavs = [made["short"][1], made["long"][1]]
        whole, windowed = bare_recogniser_rates(wavs)
        bare = max(whole, windowed)
        job, elapsed = job_rate(wavs, work)
        print(
            f"audio path: job {job:.1f} s of audio per s ({elapsed:.1f} s for "
            f"{args.short_s + args.long_s:.0f} s of audio); bare recogniser {whole:.1f} s/s on "
            f"whole files, {windowed:.1f} s/s on the job's windows; job_vs_bare={job / bare:.2f} "
            "(the faster bare rate; target >= 0.8)"
        )
        print(f"peak_rss_ratio={peaks['long'] / peaks['short']:.2f}")


if __name__ == "__main__":
    main()
