from __future__ import annotations

import json
import subprocess

import pytest

from mrag.cli import main
from tests.media import bad_images, good_images
from tests.processes import mrag_command, not_on_loopback, user_env, watch_listeners


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    for rel, data in good_images().items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    (folder / "photos" / "empty.jpg").write_bytes(bad_images()["photos/empty.jpg"][0])
    return folder


@pytest.mark.integration
def test_ingest_then_search_json(ray_local, corpus, tmp_path, capsys) -> None:
    db = str(tmp_path / "db")
    assert main(["ingest", str(corpus), "--db", db, "--profile", "offline", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ingested"] == len(good_images())
    assert summary["failed"] == {"EmptyObject": 1}

    query = corpus / "photos" / "c.png"
    argv = ["search", "--image", str(query), "--db", db, "--profile", "offline", "-k", "3"]
    assert main([*argv, "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert len(hits) == 3
    assert hits[0]["uri"] == str(query)
    assert {"chunk_id", "uri", "modality", "score"} <= set(hits[0])

    assert main(["search", "a photo", "--db", db, "--profile", "offline", "--json",
                 "--uri-prefix", str(corpus / "photos" / "nested")]) == 0  # fmt: skip
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert [h["uri"] for h in hits] == [str(corpus / "photos" / "nested" / "i-rotated.jpeg")]

    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith(str(query))


def test_bad_search_requests_exit_2_with_a_message(tmp_path, capsys) -> None:
    db = str(tmp_path / "db")
    assert main(["search", "--db", db, "--profile", "offline"]) == 2
    assert "exactly one of a text query or an image" in capsys.readouterr().err
    assert main(["search", "x", "-k", "0", "--db", db, "--profile", "offline"]) == 2
    assert "k must be an integer from 1 to 100" in capsys.readouterr().err
    assert main(["search", "x", "--db", db, "--profile", "default"]) == 2
    assert "--profile offline" in capsys.readouterr().err  # how to get weights, not a traceback


@pytest.mark.integration
@pytest.mark.slow
def test_demo_runs_offline_end_to_end_on_loopback_only(tmp_path) -> None:
    process = subprocess.Popen(
        [mrag_command(), "demo", "--dir", str(tmp_path / "demo")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=user_env(),
    )  # fmt: skip
    listeners = watch_listeners(process, timeout_s=300)
    stdout, stderr = process.communicate()
    assert process.returncode == 0, stderr
    assert listeners and not_on_loopback(listeners) == []
    lines = stdout.splitlines()
    # 24 images, 3 documents, a recording and a video; the corrupt JPEG fails
    assert "ingested 29" in stdout and "failed 1" in stdout

    def first_line_after(prefix: str) -> str:
        header = next(line for line in lines if line.startswith(prefix))
        return lines[lines.index(header) + 1].strip()

    assert first_line_after("image search").endswith("red-circle.jpg")
    assert first_line_after("text search \"what are Saturn's").endswith("saturn.md (text)")
    answer = first_line_after("mrag ask")
    assert "gpg --encrypt --recipient" in answer and "[1]" in answer
    sources = lines[lines.index(next(ln for ln in lines if ln.strip() == "sources:")) + 1]
    assert sources.strip().startswith("[1] encrypt-files.txt")
    spoken = first_line_after("spoken-word search")  # found by what is said, with its moment
    assert "harbour-tour.wav 00:0" in spoken and spoken.endswith("(audio_segment)")
    scene = first_line_after("image search with a frame")
    assert "three-scenes.mp4 00:03–00:0" in scene  # inside the second scene (3-6 s)
    # no library chatter a new user would read as failure
    for noise in ("fork-safe", "Token authentication", "Progress bars", "max_restarts"):
        assert noise not in stdout + stderr, noise
    assert "RANDOM weights" in stdout and "mrag serve" in stdout
    assert "http://127.0.0.1:8000/" in stdout  # how to open the page
