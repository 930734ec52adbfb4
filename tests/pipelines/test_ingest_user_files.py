"""Ordinary files that broke `mrag ingest` for users, run the way a user runs it.

The installed ``mrag`` command in a subprocess with the environment a user has (no test-only Ray
settings), on real files: a name that is not valid UTF-8, a 9000x9000 camera-sized JPEG, a PNG
bomb and a 3000-page PDF beside ordinary images. While it runs, every listening socket of the
command and of the Ray processes it started is read from the OS.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from PIL import Image

from mrag import storage
from mrag.config import load_config
from mrag.query import QueryEngine
from mrag.store import schema
from mrag.store.lance import Store
from tests.doc_media import text_pdf
from tests.media import bomb_png, encode, good_images, pattern
from tests.processes import mrag_command, not_on_loopback, user_env, watch_listeners

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ODD_NAME = b"caf\xe9-\xff.png"  # Latin-1 bytes: a valid Linux file name, not valid UTF-8
PDF_PAGES, PDF_LIMIT = 3000, 40


def _big_photo() -> bytes:
    """A 9000x9000 JPEG of a few MB, like a phone camera's (81 MP, over the 64 MP limit)."""
    small = pattern(42, (90, 90))
    return encode(small.resize((9000, 9000), Image.Resampling.BILINEAR), "JPEG", quality=90)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("user-files")
    good = dict(list(good_images().items())[:3])
    for rel, data in good.items():
        (folder / os.path.basename(rel)).write_bytes(data)
    odd = os.path.join(os.fsencode(folder), ODD_NAME)
    with open(odd, "wb") as out:
        out.write(encode(pattern(77), "PNG"))
    (folder / "big-photo.jpg").write_bytes(_big_photo())
    (folder / "bomb.png").write_bytes(bomb_png())
    pages = [f"Section {n}: the ledger entries for day {n} of the audit." for n in range(PDF_PAGES)]
    (folder / "long-report.pdf").write_bytes(text_pdf(pages))
    return {"folder": folder, "good": [folder / os.path.basename(r) for r in good], "odd": odd}


def _ingest(folder, db) -> tuple[dict, set]:
    argv = [mrag_command(), "ingest", str(folder), "--db", str(db), "--profile", "offline",
            "--json", "--set", f"ingest.pdf_max_pages={PDF_LIMIT}",
            "--set", "ingest.pdf_render_px=256"]  # fmt: skip
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=user_env()
    )
    listeners = watch_listeners(process, timeout_s=300)
    out, err = process.communicate()
    assert process.returncode == 0, err
    return json.loads(out), listeners


def test_odd_names_huge_photos_bombs_and_long_pdfs(corpus, tmp_path) -> None:
    db = tmp_path / "db"
    summary, listeners = _ingest(corpus["folder"], db)

    # Ray, as the CLI starts it, listens on loopback only.
    assert listeners, "no listening socket seen: Ray did not start?"
    assert not_on_loopback(listeners) == []

    assert summary["ingested"] == 3 + 3  # good images, the odd name, the big photo, the PDF
    assert summary["partial"] == {"TooManyPages": 1}
    assert summary["failed"] == {"DecompressionBombError": 1}

    store = Store(str(db))
    chunks = store.read(schema.CHUNKS, ["uri", "modality", "page"]).to_pylist()
    uris = {row["uri"] for row in chunks}
    odd_uri = storage.local_uri(os.fsdecode(corpus["odd"]))
    assert odd_uri.startswith("file://") and storage.local_path(odd_uri) == os.fsdecode(
        corpus["odd"]
    )
    big = str(corpus["folder"] / "big-photo.jpg")
    pdf = str(corpus["folder"] / "long-report.pdf")
    assert uris == {*map(str, corpus["good"]), odd_uri, big, pdf}
    pdf_pages = sorted(r["page"] for r in chunks if r["uri"] == pdf and r["modality"] == "pdf_page")
    assert pdf_pages == list(range(1, PDF_LIMIT + 1))
    assert max(r["page"] for r in chunks if r["uri"] == pdf) == PDF_LIMIT

    errors = {row["uri"]: row for row in store.read(schema.ERRORS).to_pylist()}
    assert set(errors) == {str(corpus["folder"] / "bomb.png"), pdf}
    assert errors[pdf]["error_class"] == "TooManyPages"
    assert f"pages {PDF_LIMIT + 1}-{PDF_PAGES} are left out" in errors[pdf]["message"]
    assets = {row["uri"]: row for row in store.read(schema.ASSETS).to_pylist()}
    assert assets[pdf]["status"] == "partial" and assets[pdf]["n_chunks"] > PDF_LIMIT
    big_asset = assets[big]
    assert (big_asset["status"], big_asset["modality"]) == ("ok", "image")
    big_row = store.read(schema.CHUNKS, ["uri", "width_px", "height_px"]).to_pylist()
    assert {(r["width_px"], r["height_px"]) for r in big_row if r["uri"] == big} == {(9000, 9000)}

    # Each image finds itself first, the odd name included (under its reversible uri).
    config = load_config(profile="offline", overrides={"db_uri": str(db)})
    engine = QueryEngine(config)
    with open(corpus["odd"], "rb") as image:
        assert engine.search(None, image=image.read(), k=1)[0].uri == odd_uri
    found = subprocess.run(
        [mrag_command(), "search", "--image", big, "--db", str(db), "--profile", "offline",
         "-k", "1", "--json"],
        capture_output=True, text=True, env=user_env(), timeout=120, check=True,
    )  # fmt: skip
    assert json.loads(found.stdout)["hits"][0]["uri"] == big

    counts = {
        name: store.count_rows(name) for name in (schema.ASSETS, schema.CHUNKS, schema.ERRORS)
    }
    again, _ = _ingest(corpus["folder"], db)
    assert (again["ingested"], again["skipped"]) == (0, again["seen"])
    assert {name: store.count_rows(name) for name in counts} == counts
