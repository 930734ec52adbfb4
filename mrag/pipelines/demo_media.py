"""The demo's recording and video, made on the spot: speech from Debian's ``espeak-ng`` and a
three-scene video encoded with PyAV, so `mrag demo` shows audio and video search offline."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

RATE = 16_000
#: (start_s, sentence) of the demo's spoken recording.
TALK = (
    (1.0, "Welcome to the harbour tour."),
    (6.0, "The submarine cable to the island was cut by a dragging anchor."),
    (14.0, "Repairs took three weeks and a special ship."),
)
#: The video's scenes (colour of the backdrop, 3 s each) and what is said during scene two.
SCENES = ((200, 40, 40), (40, 160, 70), (50, 70, 210))
SCENE_S = 3.0
NARRATION = ((3.5, "Here the old sailor painted the wooden door."),)


def have_speech_synthesis() -> bool:
    return shutil.which("espeak-ng") is not None


def speech(placements: Sequence[tuple[float, str]], total_s: float) -> np.ndarray:
    """Float32 16 kHz mono: each sentence spoken by espeak-ng at its start time, silence between."""
    out = np.zeros(int(total_s * RATE), dtype=np.float32)
    for start_s, text in placements:
        wav = subprocess.run(
            ["espeak-ng", "--stdout", "-s", "150", text], check=True, capture_output=True
        ).stdout
        with wave.open(io.BytesIO(wav)) as reader:
            rate = reader.getframerate()
            pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
        voice = pcm.astype(np.float32) / 32768.0
        times = np.arange(int(len(voice) * RATE / rate)) / RATE
        voice = np.interp(times, np.arange(len(voice)) / rate, voice).astype(np.float32)
        start = int(start_s * RATE)
        end = min(len(out), start + len(voice))
        out[start:end] += voice[: end - start]
    return out


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(RATE)
        writer.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def scene_image(scene: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """A scene's picture: its backdrop colour and a white block where no other scene has one."""
    width, height = size
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = SCENES[scene]
    left = width // 8 + scene * width // 4
    image[height // 3 : 2 * height // 3, left : left + width // 5] = 255
    return image


def scenes_mp4(audio: np.ndarray | None, fps: int = 10) -> bytes:
    """H.264 at ``fps`` with :data:`SCENES`, and ``audio`` as an AAC track when given."""
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        sound = out.add_stream("aac", rate=RATE, layout="mono") if audio is not None else None
        for scene in range(len(SCENES)):
            for _ in range(int(SCENE_S * fps)):
                frame = av.VideoFrame.from_ndarray(scene_image(scene), format="rgb24")
                out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            pts = 0
            for start in range(0, len(audio), 1024):
                block = audio[start : start + 1024].reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(block, format="flt", layout="mono")
                frame.sample_rate, frame.pts = RATE, pts
                pts += block.shape[1]
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))
    return buffer.getvalue()
