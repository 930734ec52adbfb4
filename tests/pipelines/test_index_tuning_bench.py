"""``bench/query_latency.py --rows N`` (the self-tuning index benchmark) runs end to end at a
small size: what CI runs. Figures are printed, never asserted on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_index_bench_ends_with_rows_recall_and_p50(tmp_path) -> None:
    command = [
        sys.executable, "bench/query_latency.py", "--rows", "3000", "--queries", "20",
        "--db", str(tmp_path), "--vector-min-rows", "1000",
        "--set", "index.recall_sample=20", "--set", "index.rows_per_partition=1000",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    last = re.fullmatch(r"rows=(\d+) recall@10=(\d+(?:\.\d+)?) p50_ms=(\d+(?:\.\d+)?)", lines[-1])
    assert last, lines[-1]
    assert int(last[1]) == 3000 and 0.0 <= float(last[2]) <= 1.0 and float(last[3]) > 0
    shown = "\n".join(lines)
    # An index was built and tuned, and the filtered recall was measured and printed.
    assert "clip: building IVF_HNSW_SQ" in shown and "recall@10" in shown
    for name in ("modality=video_frame", "uri prefix /bench/s07/"):
        found = rf"filtered \({re.escape(name)}, 1 % of rows\), query path: recall@10 [01]\.\d+"
        assert re.search(found, shown)
