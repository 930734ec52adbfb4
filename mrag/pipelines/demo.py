"""`mrag demo` (also `python -m pipelines.demo`): generate a small corpus, ingest it with local Ray,
search it, and explain the results.

Runs without network access: the corpus is drawn here and the offline profile needs no downloads.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mrag.config import PROFILES, load_config
from mrag.pipelines.command import run_command

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

_COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 50, 170),
    "orange": (245, 140, 20),
}
_SHAPES = ("circle", "square", "triangle", "stripes")
_FORMATS = (("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"))


def make_sample_corpus(folder: Path, seed: int = 7) -> list[Path]:
    """Draws one image per colour × shape (24), in JPEG/PNG/WebP, plus one corrupt file."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, ((colour, rgb), shape) in enumerate((c, s) for c in _COLOURS.items() for s in _SHAPES):
        img = Image.new("RGB", (320, 240), tuple(rng.randint(200, 255) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        x, y, r = rng.randint(90, 230), rng.randint(80, 160), rng.randint(45, 70)
        if shape == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=rgb)
        elif shape == "square":
            draw.rectangle((x - r, y - r, x + r, y + r), fill=rgb)
        elif shape == "triangle":
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=rgb)
        else:
            for offset in range(0, 320, 40):
                draw.rectangle((offset, 0, offset + 18, 240), fill=rgb)
        ext, fmt = _FORMATS[i % len(_FORMATS)]
        path = folder / f"{colour}-{shape}.{ext}"
        img.save(path, format=fmt)
        paths.append(path)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return paths


def run_demo(folder: Path, *, profile: str = "offline", clip_weights: str | None = None) -> None:
    """Builds ``folder/corpus`` and ``folder/db``, ingests, runs searches, prints what they mean."""
    from mrag.pipelines.ingest import run_ingest
    from mrag.query import QueryEngine

    folder = folder.resolve()
    corpus = folder / "corpus"
    images = make_sample_corpus(corpus)
    db_uri = str(folder / "db")
    config = load_config(
        profile=profile, overrides={"db_uri": db_uri, "clip_weights": clip_weights}
    )
    print(f"mrag demo: {len(images)} images + 1 corrupt file in {corpus}")
    print(f"  profile {config.profile}: CLIP model {config.clip_model}")
    summary = run_ingest(config, [str(corpus)])
    print(f"ingest: {summary.render()}")

    engine = QueryEngine.for_config(config)
    query_image = images[0]
    print(f"\nimage search with {query_image.name} (it should come back first):")
    for rank, hit in enumerate(engine.search(None, image=query_image.read_bytes(), k=3), 1):
        print(f"  {rank}. {hit.score:+.4f}  {Path(hit.uri).name}")
    for text in ("a red circle", "blue stripes"):
        print(f"\ntext search {text!r}:")
        for rank, hit in enumerate(engine.search(text, k=3), 1):
            print(f"  {rank}. {hit.score:+.4f}  {Path(hit.uri).name}")

    if config.profile == "offline":
        print(
            "\nNOTE: the offline profile uses a tiny CLIP with RANDOM weights (seeded). Image→image"
            "\nsearch finds exact copies, but text→image rankings and all scores are meaningless."
            "\nFor real results use pretrained weights: `mrag demo --profile default` with network"
            "\naccess to the model hub, or --clip-weights PATH_OR_S3_PREFIX pointing at"
            "\nopen_clip_pytorch_model.bin of ViT-B-32 laion2b_s34b_b79k."
        )
    print(
        f"\nSearch it yourself:  mrag search 'a red circle' --db {db_uri} --profile {profile}"
        f"\nStart the server:    mrag serve --db {db_uri} --profile {profile} --port 8000"
        '\n                     curl -s localhost:8000/v1/search -d \'{"query": "red", "k": 3}\'',
        file=sys.stdout,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default="mrag-demo", help="where the corpus and database go")
    parser.add_argument("--profile", choices=sorted(PROFILES))
    parser.add_argument("--clip-weights", help="local path or s3:// prefix of CLIP weights")


def command(args: argparse.Namespace) -> int:
    run_demo(Path(args.dir), profile=args.profile or "offline", clip_weights=args.clip_weights)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.demo``: the same flags as ``mrag demo``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=__doc__)
    add_arguments(parser)
    return run_command(command, parser.parse_args(argv))
