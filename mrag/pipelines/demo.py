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

    from mrag.query import QueryEngine

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

#: Short documents, one per document format, each on a topic no other file shares, so a text
#: question about one of them has one right first hit even with the offline profile.
SAMPLE_DOCUMENTS: dict[str, str] = {
    "encrypt-files.txt": """\
Encrypting a file with GnuPG

To encrypt a file for yourself, run gpg --symmetric secret.txt and choose a passphrase. GnuPG
writes secret.txt.gpg next to the original. To decrypt it again, run gpg --decrypt
secret.txt.gpg.

To encrypt a file for someone else, import their public key and run
gpg --encrypt --recipient alice@example.org report.pdf.
""",
    "saturn.md": """\
# Saturn

Saturn is the sixth planet from the Sun and the second largest in the Solar System.

## Rings

Saturn's rings are made mostly of water ice, with some rocky debris and dust. The main rings
stretch up to 282,000 km from the planet but are only about ten metres thick.
""",
    "sourdough.html": """\
<!doctype html>
<html><head><title>Baking sourdough bread</title></head>
<body>
<nav><a href="/">Home</a> | <a href="/recipes">Recipes</a></nav>
<main>
<h1>Baking sourdough bread</h1>
<p>Feed the starter the evening before, then mix flour, water and salt with a spoonful of
active starter.</p>
<p>Let the dough rise for about eight hours, shape it, and bake it in a covered pot at 250
degrees Celsius for forty minutes.</p>
</main>
<footer>Copyright 2024 Example Kitchen</footer>
</body></html>
""",
}


def make_sample_corpus(folder: Path, seed: int = 7) -> list[Path]:
    """Draws one image per colour × shape (24), in JPEG/PNG/WebP, writes the
    :data:`SAMPLE_DOCUMENTS` and one corrupt file; returns the images' paths.

    A file that already holds the same bytes is left alone (its mtime too), so a second run
    finds the corpus unchanged and the ingest skips it.
    """
    import io

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
        encoded = io.BytesIO()
        img.save(encoded, format=fmt)
        _write_if_changed(path, encoded.getvalue())
        paths.append(path)
    for name, text in SAMPLE_DOCUMENTS.items():
        _write_if_changed(folder / name, text.encode())
    _write_if_changed(folder / "broken.jpg", b"\xff\xd8\xff\xe0 this is not really a JPEG")
    _write_media(folder)
    return paths


def _write_media(folder: Path) -> None:
    """A spoken recording and a narrated three-scene video (silent without espeak-ng)."""
    from mrag.pipelines import demo_media

    narration = None
    if demo_media.have_speech_synthesis():
        talk = demo_media.speech(demo_media.TALK, 20.0)
        _write_if_changed(folder / "harbour-tour.wav", demo_media.wav_bytes(talk))
        scenes_s = demo_media.SCENE_S * len(demo_media.SCENES)
        narration = demo_media.speech(demo_media.NARRATION, scenes_s)
    video = demo_media.scenes_mp4(narration)
    if not (folder / "three-scenes.mp4").is_file():  # re-encoding is not byte-identical
        (folder / "three-scenes.mp4").write_bytes(video)


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.is_file() or path.read_bytes() != data:
        path.write_bytes(data)


def run_demo(folder: Path, *, profile: str = "offline", clip_weights: str | None = None) -> None:
    """Builds ``folder/corpus`` and ``folder/db``, ingests, searches, answers a question with
    citations, and prints what the results mean and how to go on (CLI, server, page)."""
    from mrag.answers import answer_events, generator_from_config
    from mrag.pipelines.ingest import run_ingest
    from mrag.query import QueryEngine, validate_request

    folder = folder.resolve()
    corpus = folder / "corpus"
    images = make_sample_corpus(corpus)
    db_uri = str(folder / "db")
    config = load_config(
        profile=profile, overrides={"db_uri": db_uri, "clip_weights": clip_weights}
    )
    print(
        f"mrag demo: {len(images)} images, {len(SAMPLE_DOCUMENTS)} documents, a recording, "
        f"a video and 1 corrupt file in {corpus}"
    )
    print(f"  profile {config.profile}: CLIP {config.clip_model}, text {config.text_model}")
    summary = run_ingest(config, [str(corpus)])
    print(f"ingest: {summary.render()}")

    engine = QueryEngine.for_config(config)
    query_image = images[0]
    print(f"\nimage search with {query_image.name} (it should come back first):")
    for rank, hit in enumerate(engine.search(None, image=query_image.read_bytes(), k=3), 1):
        print(f"  {rank}. {hit.score:+.4f}  {Path(hit.uri).name}")
    for text in ("how long does the dough rise?", "what are Saturn's rings made of?"):
        print(f"\ntext search {text!r}:")
        for rank, hit in enumerate(engine.search(text, k=3), 1):
            print(f"  {rank}. {hit.score:+.4f}  {Path(hit.uri).name} ({hit.modality})")
    _search_media(engine, corpus)

    question = "How do I encrypt a file for someone else?"
    print(f"\nmrag ask {question!r} ({config.generate.generator} generator):")
    generator = generator_from_config(config, embed=engine.text.embed_texts)
    request = validate_request({"query": question, "k": 5}, config.serve.max_k)
    for event in answer_events(engine, request, generator):
        if event["type"] == "done":
            result = event["result"]
    print("  " + result.answer.strip().replace("\n", "\n  "))
    cited = {c.n for c in result.citations}
    print("  sources:")
    for item in result.evidence:
        if item.n in cited:
            print(f"    {item.citation().replace(str(corpus) + '/', '')}")

    if config.profile == "offline":
        print(
            "\nNOTE: the offline profile uses a tiny CLIP with RANDOM weights (seeded). Image→image"
            "\nsearch finds exact copies, but text→image rankings and their scores are"
            "\nmeaningless. Document search and answers use the packaged all-MiniLM-L6-v2 (real"
            "\nweights), so they are meaningful offline. For real image results use pretrained"
            "\nCLIP weights: `mrag demo --profile default` with network access to the model hub, or"
            "\n--clip-weights PATH_OR_S3_PREFIX pointing at open_clip_pytorch_model.bin of ViT-B-32"
            "\nlaion2b_s34b_b79k."
        )
    flags = f"--db {db_uri} --profile {config.profile}"
    print(
        f"\nSearch it yourself:  mrag search 'rings of ice' {flags}"
        f"\nAsk it yourself:     mrag ask '{question}' {flags} --stream"
        f"\nStart the server:    mrag serve {flags} --port 8000"
        "\nOpen the page:       http://127.0.0.1:8000/  (search, drop an image, streamed answers)"
        '\n                     curl -s localhost:8000/v1/answer -d \'{"query": "saturn rings"}\'',
        file=sys.stdout,
    )


def _search_media(engine: QueryEngine, corpus: Path) -> None:
    """A moment in the recording found by what is said, and in the video by a frame."""
    import io

    from PIL import Image

    from mrag.locators import format_time_range
    from mrag.pipelines import demo_media

    def show(hits: list) -> None:
        for rank, hit in enumerate(hits, 1):
            where = ""
            if hit.start_s is not None and hit.end_s is not None:
                where = f" {format_time_range(hit.start_s, hit.end_s)}"
            print(f"  {rank}. {hit.score:+.4f}  {Path(hit.uri).name}{where} ({hit.modality})")

    if (corpus / "harbour-tour.wav").is_file():
        text = "what cut the cable to the island?"
        print(f"\nspoken-word search {text!r} (the moment it is said, mm:ss–mm:ss):")
        show(engine.search(text, k=3, filters={"modality": ["audio_segment", "video_segment"]}))
    frame = io.BytesIO()
    Image.fromarray(demo_media.scene_image(1)).save(frame, format="PNG")
    print("\nimage search with a frame of the video's second scene (00:03–00:06 of it):")
    show(engine.search(None, image=frame.getvalue(), k=3))


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
