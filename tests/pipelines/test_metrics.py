"""The ingest's metrics on Ray's Prometheus endpoint, scraped while a job runs."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.pipelines.test_faults import JOB_TIMEOUT_S, _finish, _write_corpus
from tests.processes import mrag_command, user_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WANTED = {
    "ray_mrag_ingest_objects_total",
    "ray_mrag_ingest_bytes_total",
    "ray_mrag_ingest_chunks_total",
    "ray_mrag_ingest_errors_total",
    "ray_mrag_ingest_stage_seconds_count",
    "ray_mrag_ingest_commit_seconds_count",
    "ray_mrag_ingest_commit_rows_count",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scrape(port: int) -> dict[str, list[str]]:
    """Metric name → its sample lines (labels and value)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return {}
    samples: dict[str, list[str]] = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            samples.setdefault(name, []).append(line)
    return samples


def test_a_running_job_exports_its_metrics_beside_ray_datas(tmp_path) -> None:
    _write_corpus(tmp_path / "corpus")
    port = _free_port()
    process = subprocess.Popen(
        [mrag_command(), "ingest", str(tmp_path / "corpus"), "--db", str(tmp_path / "db"),
         "--profile", "offline", "--set", "ingest.write_batch_rows=8",
         "--set", "index.auto_after_ingest=false", "--set", f"ray_metrics_port={port}",
         "--json"],
        env=user_env(
            MRAG_FAULT_COMMIT_DELAY_S="1",  # a few seconds more of job to scrape
            RAY_metrics_report_interval_ms="500",
        ),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    started = time.monotonic()
    seen: dict[str, list[str]] = {}
    while process.poll() is None and time.monotonic() - started < JOB_TIMEOUT_S:
        for name, lines in _scrape(port).items():
            seen[name] = lines
        if WANTED <= set(seen) and any(n.startswith("ray_data_") for n in seen):
            break
        time.sleep(0.5)
    summary, _ = _finish(process)
    mrag = sorted(n for n in seen if "mrag_" in n)
    print(f"scraped {len(seen)} metrics on 127.0.0.1:{port}, mrag's: {mrag}")
    assert WANTED <= set(seen), f"missing: {sorted(WANTED - set(seen))}"
    assert any(n.startswith("ray_data_") for n in seen)  # Ray Data's own, same endpoint
    stages = {
        part.split('"')[1]
        for line in seen["ray_mrag_ingest_stage_seconds_count"]
        for part in line.split(",")
        if part.startswith("stage=")
    }
    assert stages == {"decode", "embed", "write"}
    error_classes = " ".join(seen["ray_mrag_ingest_errors_total"])
    assert "CorruptPDF" in error_classes
    report = json.loads(open(summary["report_uri"]).read())
    assert report["driver"]["receipt_bytes"] > 0 and report["commits"]
