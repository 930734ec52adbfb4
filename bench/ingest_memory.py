"""Ingest memory benchmark: peak RSS of every ingest process for a corpus and one 10× larger.

    .venv/bin/python bench/ingest_memory.py [--docs 150] [--scale 10]

Builds a corpus of plain-text articles (~8 chunks each) and small images (one per 5 articles),
and one ``--scale`` times larger, and runs the installed ``mrag ingest`` (offline profile) on
each into its own database while a sampler reads the RSS of the driver and of every Ray worker
process under it every 0.1 s. Each worker is classed by the tasks it was seen running (its
process title: ``ray::MapBatches(_decode)``…): model actor, decode worker, writer, planner; a
worker seen running several kinds counts under each. Per class it prints the largest peak RSS
in each run, and the ratio large/small. The run report gives the bytes the driver received
(fragment receipts) per 1,000 chunks, beside the bytes the writers wrote. Last line::

    peak_rss_growth=<max over classes of large/small peak RSS>
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from bench.ingest_text import make_documents  # noqa: E402

CLASSES = (  # (class, words in a process title that put a worker in it)
    ("embed actor", ("EmbedStage",)),
    ("decode worker", ("_decode",)),
    ("writer", ("_write_fragments",)),
    ("planner", ("_plan", "_list_shards", "_tally", "_todo_rows")),
)


def make_corpus(root: Path, n_docs: int) -> None:
    from tests.media import encode, pattern

    make_documents(root / "docs", n_docs)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    for i in range(max(1, n_docs // 5)):
        (root / "images" / f"img-{i:05d}.png").write_bytes(
            encode(pattern(rng.randrange(10_000)), "PNG")
        )


class Sampler(threading.Thread):
    """Peak RSS per process of a tree, and the titles each process was seen with."""

    def __init__(self, root_pid: int) -> None:
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.peaks: dict[int, int] = {}
        self.titles: dict[int, set[str]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                root = psutil.Process(self.root_pid)
                processes = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                try:
                    rss = process.memory_info().rss
                    title = " ".join(process.cmdline())[:200]
                except psutil.Error:
                    continue
                self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), rss)
                self.titles.setdefault(process.pid, set()).add(title)
            time.sleep(0.1)

    def by_class(self) -> dict[str, int]:
        peaks = {"driver": self.peaks.get(self.root_pid, 0)}
        for pid, titles in self.titles.items():
            seen = " ".join(titles)
            for name, words in CLASSES:
                if any(w in seen for w in words):
                    peaks[name] = max(peaks.get(name, 0), self.peaks[pid])
        return peaks


def run_job(corpus: Path, db: Path) -> tuple[dict[str, int], dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HF_HUB_OFFLINE"] = "1"
    mrag = str(Path(sys.executable).parent / "mrag")
    args = [mrag, "ingest", str(corpus), "--db", str(db), "--profile", "offline",
            "--set", "index.auto_after_ingest=false", "--json"]  # fmt: skip
    process = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    sampler = Sampler(process.pid)
    sampler.start()
    out, err = process.communicate()
    sampler.stop.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"ingest failed:\n{err[-3000:]}")
    summary = json.loads(out)
    report = json.loads(Path(summary["report_uri"]).read_text())
    return sampler.by_class(), report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=150)
    parser.add_argument("--scale", type=int, default=10)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mrag-mem-") as tmp:
        for label, n_docs in (("small", args.docs), ("large", args.docs * args.scale)):
            corpus = Path(tmp) / label
            make_corpus(corpus, n_docs)
            started = time.perf_counter()
            peaks, report = run_job(corpus, Path(tmp) / f"{label}-db")
            summary = report["summary"]
            driver = report["driver"]
            chunks = max(summary["chunks"], 1)
            print(
                f"{label}: {summary['seen']} objects, {summary['chunks']} chunks in "
                f"{time.perf_counter() - started:.0f} s, {summary['commits']} commits; driver "
                f"received {driver['receipt_bytes'] / chunks * 1000 / 1024:.1f} KiB per 1,000 "
                f"chunks (writers wrote {driver['written_bytes'] / chunks * 1000 / 1024:.0f} "
                "KiB per 1,000 chunks)"
            )
            for name, rss in sorted(peaks.items()):
                print(f"  {name:14s} peak RSS {rss / 2**20:7.1f} MiB")
            results[label] = peaks
    ratios = {
        name: results["large"][name] / results["small"][name]
        for name in results["small"]
        if name in results["large"] and results["small"][name]
    }
    for name, ratio in sorted(ratios.items()):
        print(f"{name:14s} large/small peak RSS {ratio:.2f}")
    print(f"peak_rss_growth={max(ratios.values()):.2f}")


if __name__ == "__main__":
    main()
