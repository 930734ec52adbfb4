"""Text ingest benchmark: end-to-end chunks/s of ``pipelines.ingest`` against the bare encoder.

    .venv/bin/python bench/ingest_text.py [--model-seconds 90 | --n-docs N] [--batch-size 32]

One run measures both: the bare rate of the job's text encoders (the packaged
all-MiniLM-L6-v2 and the offline profile's CLIP text tower, which gives every chunk a vector in
the image space; over the very chunks the job will make, in the same calls: ``text_sort_window``
rows in document order, MiniLM sorting each by length into batches of the same size, same
threads) and the end-to-end rate of the job on the same documents (job start → last committed
row; Ray start-up excluded, printed separately), and the time from job start to its first
commit (rows are committed while the job runs). MiniLM's rate alone is printed too. The encoder
rate is measured before and after the job (Ray shut down) and the faster of the two is the
reference. The corpus is sized from a probe of the encoder's rate to
``--model-seconds`` of encoder work, so the job's fixed start-up is weighed against a realistic
amount of work on any machine. Last line: ``end_to_end_vs_forward=<ratio>``.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = (
    "river mountain bread engine violin harbor lantern orchard comet glacier market tide "
    "signal forest copper meadow thunder anchor beacon canyon desert ember falcon garden "
    "island jungle kettle ladder mirror needle ocean pepper quartz saddle timber valley"
).split()


def make_documents(folder: Path, n_docs: int, seed: int = 0) -> None:
    """Plain-text articles of 6 paragraphs × 5 sentences (~600 words each)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for d in range(n_docs):
        paragraphs = []
        for _ in range(6):
            sentences = [
                " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 28))).capitalize() + "."
                for _ in range(5)
            ]
            paragraphs.append(" ".join(sentences))
        (folder / f"doc-{d:04d}.txt").write_text("\n\n".join(paragraphs))


def chunk_folder(folder: Path, config, count_tokens) -> list[str]:
    """The chunk texts the job will make from ``folder``, in document order."""
    from mrag.chunk import chunk_text
    from mrag.decode.text import decode_text

    texts = []
    for path in sorted(folder.iterdir()):
        decoded = decode_text(path.read_bytes(), kind="text")
        texts += [
            c.text
            for c in chunk_text(
                decoded.text,
                max_tokens=config.ingest.chunk_max_tokens,
                overlap_tokens=config.ingest.chunk_overlap_tokens,
                count_tokens=count_tokens,
            )
        ]
    return texts


def encoder_seconds(encoders, texts: list[str], window: int) -> list[float]:
    """Seconds each bare encoder spends on ``texts`` in the job's calls: ``window`` rows in
    document order per call (the MiniLM encoder sorts each by length into batches)."""
    spent = [0.0] * len(encoders)
    for start in range(0, len(texts), window):
        call = texts[start : start + window]
        for i, encoder in enumerate(encoders):
            started = time.perf_counter()
            encoder.embed_texts(call)
            spent[i] += time.perf_counter() - started
    return spent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-docs", type=int, help="corpus size (default: from --model-seconds)")
    parser.add_argument(
        "--model-seconds",
        type=float,
        default=90.0,
        help="size the corpus to this much bare-encoder work (>= 100 documents)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--torch-threads", type=int, default=0, help="0: every core")
    parser.add_argument("--out", help="folder for documents and database (default: temp dir)")
    args = parser.parse_args()

    import numpy as np  # noqa: F401  (imported before torch for a stable BLAS choice)
    import ray

    from mrag.config import load_config
    from mrag.embed.clip import ClipEmbedder
    from mrag.embed.text import HFTextEmbedder
    from mrag.models import get_model_spec
    from mrag.pipelines.ingest import run_ingest
    from mrag.ray_runtime import init_ray
    from mrag.store import schema
    from mrag.store.lance import Store

    root = Path(args.out or tempfile.mkdtemp(prefix="mrag-bench-text-"))
    config = load_config(
        profile="offline",
        overrides={
            "db_uri": str(root / "db"),
            "ingest.embed_batch_size": args.batch_size,
            "ingest.torch_threads": args.torch_threads,
            "index.auto_after_ingest": False,
        },
    )
    threads = config.ingest.torch_threads or os.cpu_count() or 1
    window = config.ingest.text_sort_window
    embedder = HFTextEmbedder(
        get_model_spec(config.text_model), batch_size=args.batch_size, num_threads=threads
    )
    # Every chunk also gets a CLIP text vector (so image queries reach text): the job's text
    # encoding is both models, and the reference is too (MiniLM alone is printed beside it).
    clip = ClipEmbedder(
        get_model_spec(config.clip_model),
        batch_size=args.batch_size,
        num_threads=threads,
        seed=config.seed,
    )
    encoders = [embedder, clip]
    n_docs = args.n_docs
    if n_docs is None:  # size the corpus from a probe of the same generator
        make_documents(root / "probe", 40, seed=1)
        probe = chunk_folder(root / "probe", config, embedder.count_tokens)
        encoder_seconds(encoders, probe[: args.batch_size], window)  # warm-up
        seconds_per_doc = sum(encoder_seconds(encoders, probe, window)) / 40
        n_docs = max(100, math.ceil(args.model_seconds / seconds_per_doc))
    make_documents(root / "docs", n_docs)
    texts = chunk_folder(root / "docs", config, embedder.count_tokens)
    encoder_seconds(encoders, texts[: args.batch_size], window)  # warm-up
    minilm_before, clip_before = encoder_seconds(encoders, texts, window)
    forward_before = len(texts) / (minilm_before + clip_before)
    print(f"{n_docs} documents, {len(texts)} chunks; bare text encoders "
          f"({threads} threads): {forward_before:.2f} chunks/s "
          f"(MiniLM alone {len(texts) / minilm_before:.2f})", flush=True)  # fmt: skip

    ray_startup_s = init_ray(num_cpus=os.cpu_count())
    summary = run_ingest(config, [str(root / "docs")])
    rows = Store(config.db_uri).count_rows(schema.CHUNKS)
    if summary.chunks != len(texts) or rows != len(texts):
        raise SystemExit(f"expected {len(texts)} chunks, got {rows}: {summary.render()}")
    end_to_end = summary.chunks / summary.elapsed_s
    ray.shutdown()
    # Measured again once Ray is gone, and the faster figure kept: a slow moment of the machine
    # during one measurement must not flatter the ratio.
    minilm_after, clip_after = encoder_seconds(encoders, texts, window)
    forward_after = len(texts) / (minilm_after + clip_after)
    forward = max(forward_before, forward_after)
    minilm = len(texts) / min(minilm_before, minilm_after)

    print(f"\n{'figure':<48}{'value':>12}")
    for name, value in [
        ("documents", n_docs),
        ("chunks", len(texts)),
        ("ray start-up (excluded), s", ray_startup_s),
        ("end-to-end job time, s", summary.elapsed_s),
        ("time to first commit, s", summary.first_commit_s or float("nan")),
        ("commits", summary.commits),
        ("bare MiniLM alone (faster of two), chunks/s", minilm),
        ("bare MiniLM + CLIP text, before, chunks/s", forward_before),
        ("bare MiniLM + CLIP text, after, chunks/s", forward_after),
        ("end-to-end ingest, chunks/s", end_to_end),
    ]:
        print(f"{name:<48}{value:>12.2f}")
    print(f"end_to_end_vs_minilm_alone={end_to_end / minilm:.3f}")
    print(f"end_to_end_vs_forward={end_to_end / forward:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
