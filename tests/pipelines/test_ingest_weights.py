"""User-supplied weights, the way a user runs an ingest: ``--set text_weights=…`` and
``--clip-weights …`` reach every stage, rows name the weights that made them, and a database
refuses vectors of other weights."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from mrag.config import load_config
from mrag.errors import ConfigError
from mrag.models import get_model_spec, resolve_weights
from mrag.pipelines.ingest import run_ingest
from mrag.store import schema
from mrag.store.lance import Store
from tests.media import encode, pattern

pytestmark = pytest.mark.integration

DOC = "\n\n".join(
    f"Section {i}. Sourdough starters ferment flour and water for days; bakers fold the dough "
    "and proof it overnight before baking a crusty loaf." * 3
    for i in range(6)
)


def _sha16(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_text_weights_for_a_hub_spec_reach_the_decode_tasks(ray_local, tmp_path) -> None:
    """``all-MiniLM-L6-v2`` names a hub repo, unreachable here; its weights come from the user.

    The decode tasks measure chunks with the encoder's tokenizer, so they need the same weights
    as the embed actor (they used to look for the spec's own weights and crash).
    """
    packaged = resolve_weights(get_model_spec("all-MiniLM-L6-v2-packaged")).path
    weights = tmp_path / "minilm"
    shutil.copytree(packaged, weights)
    docs = tmp_path / "corpus"
    docs.mkdir()
    (docs / "bread.md").write_text(DOC)
    (docs / "photo.png").write_bytes(encode(pattern(3), "PNG"))
    db = str(tmp_path / "db")
    config = load_config(
        profile="offline",
        overrides={"db_uri": db, "text_model": "all-MiniLM-L6-v2", "text_weights": str(weights)},
    )

    summary = run_ingest(config, [str(docs)])

    assert (summary.ingested, summary.failed) == (2, {})
    rows = Store(db).read(schema.CHUNKS).to_pylist()
    text_rows = [r for r in rows if r["modality"] == "text"]
    assert len(text_rows) >= 2  # windows measured with the tokenizer; each one embedded
    text_id = f"local:{weights} sha256:{_sha16(weights / 'model.safetensors')}"
    for row in text_rows:
        assert (row["text_model"], row["text_weights_id"]) == ("all-MiniLM-L6-v2", text_id)
        assert row["text_vec"] is not None
    image = next(r for r in rows if r["modality"] == "image")
    assert (image["clip_model"], image["clip_weights_id"]) == (
        "tiny-clip-random",
        "random-init seed:0",
    )
    assert image["text_weights_id"] is None


def test_rows_name_the_clip_weights_and_the_database_refuses_others(ray_local, tmp_path) -> None:
    import open_clip
    import torch

    from mrag.decode.image import decode_image
    from mrag.embed.clip import ClipEmbedder

    spec = get_model_spec("tiny-clip-random")
    torch.manual_seed(7)  # other weights than the profile's seed-0 random init
    checkpoint = tmp_path / "tiny-clip.bin"
    torch.save(open_clip.CLIP(**spec.model_cfg).state_dict(), checkpoint)
    photos = tmp_path / "photos"
    photos.mkdir()
    images = {photos / f"p{i}.png": encode(pattern(i), "PNG") for i in range(3)}
    for path, data in images.items():
        path.write_bytes(data)
    db = str(tmp_path / "db")
    config = load_config(
        profile="offline", overrides={"db_uri": db, "clip_weights": str(checkpoint)}
    )

    assert run_ingest(config, [str(photos)]).ingested == 3

    rows = {r["uri"]: r for r in Store(db).read(schema.CHUNKS).to_pylist()}
    clip_id = f"local:{checkpoint} sha256:{_sha16(checkpoint)}"
    assert {(r["clip_model"], r["clip_weights_id"]) for r in rows.values()} == {
        ("tiny-clip-random", clip_id)
    }
    # And the vectors are the checkpoint's, not the seed-0 model's.
    loaded = ClipEmbedder(spec, weights=str(checkpoint))
    path, data = next(iter(images.items()))
    pixels = decode_image(
        data, image_size=spec.image_size, max_pixels=10**7, thumbnail_px=64
    ).pixels
    np.testing.assert_allclose(
        rows[str(path)]["clip"], loaded.embed_images(pixels[None])[0], atol=1e-5
    )

    # The same job without --clip-weights would add seed-0 vectors: refused before any work.
    (photos / "new.png").write_bytes(encode(pattern(9), "PNG"))
    without = load_config(profile="offline", overrides={"db_uri": db})
    with pytest.raises(ConfigError) as info:
        run_ingest(without, [str(photos)])
    assert clip_id in str(info.value) and "random-init seed:0" in str(info.value)
    assert Store(db).count_rows(schema.CHUNKS) == 3

    # The same checkpoint from another place is the same weights: the job goes on.
    copy = tmp_path / "elsewhere.bin"
    shutil.copy(checkpoint, copy)
    again = load_config(profile="offline", overrides={"db_uri": db, "clip_weights": str(copy)})
    assert run_ingest(again, [str(photos)]).ingested == 1
