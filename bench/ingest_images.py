"""Image ingest benchmark: end-to-end ``pipelines.ingest`` rate against the bare model forward.

    .venv/bin/python bench/ingest_images.py [--model-seconds 90 | --n-images N] [--batch-size 32]

Both figures come from one run on the same machine: the forward rate is ViT-B-32 (random init:
same architecture and cost as the pretrained default) over pre-decoded batches, same batch size
and torch threads as the pipeline's actor; the end-to-end rate is images from job start to the
last committed row (Ray's own start-up is excluded and printed separately). The forward rate is
measured before and after the job (Ray shut down) and the faster of the two is the reference.
The last line is ``end_to_end_vs_forward=<ratio>``: near 1.0 means decode, transfer and writes
hide behind the forward pass. The corpus is sized from the measured forward rate to ``--model-
seconds`` of model work (at least 1,000 images), so the job's fixed start-up (actor process,
torch import, model build: a few seconds) is weighed against a realistic amount of work on any
machine.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

MODEL = "ViT-B-32-random"


def make_images(folder: Path, n: int, seed: int = 0) -> None:
    """Distinct 320x240 JPEGs: random colour blocks plus noise (decode cost of real photos)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        blocks = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        big = np.kron(blocks, np.ones((40, 40, 1), dtype=np.uint8))
        noisy = np.clip(big.astype(np.int16) + rng.integers(-25, 25, big.shape), 0, 255)
        Image.fromarray(noisy.astype(np.uint8)).save(folder / f"img-{i:05d}.jpg", quality=88)


def forward_rate(embedder, batch_size: int, min_batches: int = 8, min_s: float = 20.0) -> float:
    """Images/s of ``embedder.embed_images`` alone on pre-decoded uint8 batches."""
    side = embedder.spec.image_size
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (batch_size, side, side, 3), dtype=np.uint8)
    embedder.embed_images(batch)  # warm-up
    done, started = 0, time.perf_counter()
    while done < min_batches * batch_size or time.perf_counter() - started < min_s:
        embedder.embed_images(batch)
        done += batch_size
    return done / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-images", type=int, help="corpus size (default: from --model-seconds)")
    parser.add_argument(
        "--model-seconds",
        type=float,
        default=90.0,
        help="size the corpus to this much bare-forward work (>= 1,000 images)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--torch-threads", type=int, default=0, help="0: every core")
    parser.add_argument("--out", help="folder for images and database (default: a temp dir)")
    args = parser.parse_args()

    from mrag.config import load_config
    from mrag.pipelines.ingest import run_ingest
    from mrag.ray_runtime import init_ray
    from mrag.store import schema
    from mrag.store.lance import Store

    root = Path(args.out or tempfile.mkdtemp(prefix="mrag-bench-"))
    config = load_config(
        profile="offline",
        overrides={
            "db_uri": str(root / "db"),
            "clip_model": MODEL,
            "ingest.embed_batch_size": args.batch_size,
            "ingest.torch_threads": args.torch_threads,
            "index.auto_after_ingest": False,
        },
    )
    threads = config.ingest.torch_threads or os.cpu_count() or 1

    import ray

    from mrag.embed.clip import ClipEmbedder
    from mrag.models import get_model_spec

    embedder = ClipEmbedder(get_model_spec(MODEL), batch_size=args.batch_size, num_threads=threads)
    forward_before = forward_rate(embedder, args.batch_size)
    print(f"bare forward ({MODEL}, batch {args.batch_size}, {threads} threads): "
          f"{forward_before:.2f} images/s", flush=True)  # fmt: skip
    n_images = args.n_images or max(1000, math.ceil(forward_before * args.model_seconds))
    started = time.perf_counter()
    make_images(root / "images", n_images)
    print(f"generated {n_images} images in {time.perf_counter() - started:.1f} s", flush=True)

    ray_startup_s = init_ray(num_cpus=os.cpu_count())
    summary = run_ingest(config, [str(root / "images")])
    rows = Store(config.db_uri).count_rows(schema.CHUNKS)
    if summary.ingested != n_images or rows != n_images:
        raise SystemExit(f"expected {n_images} rows, got {rows}: {summary.render()}")
    end_to_end = summary.ingested / summary.elapsed_s
    ray.shutdown()
    # Measured again once Ray is gone, and the faster figure kept: a slow moment of the machine
    # during one measurement must not flatter the ratio.
    forward_after = forward_rate(embedder, args.batch_size)
    forward = max(forward_before, forward_after)
    ratio = end_to_end / forward

    print(f"\n{'figure':<40}{'value':>12}")
    for name, value in [
        ("images", n_images),
        ("ray start-up (excluded), s", ray_startup_s),
        ("end-to-end job time, s", summary.elapsed_s),
        ("bare forward before the job, img/s", forward_before),
        ("bare forward after the job, img/s", forward_after),
        ("end-to-end ingest, images/s", end_to_end),
    ]:
        print(f"{name:<40}{value:>12.2f}")
    print(f"end_to_end_vs_forward={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
