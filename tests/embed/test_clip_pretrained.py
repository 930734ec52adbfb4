"""The pretrained open_clip path, offline.

No hub is reachable, so a seeded random-init model stands in for the real weights: saved as the
checkpoint file the hub repo holds, it goes through exactly the code that loads the default
profile's ``ViT-B-32/laion2b_s34b_b79k`` (weight resolution, open_clip's loader, tokenizer,
preprocessing config). Then mrag's own path (decode task → embed actor) is compared with
open_clip's transforms for two configs whose preprocessing differs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import TYPE_CHECKING

import numpy as np
import pytest

from mrag.config import IngestConfig
from mrag.decode.stage import DecodeStage
from mrag.embed.clip import ClipEmbedder
from mrag.models import ModelSpec, get_model_spec
from tests.media import encode

if TYPE_CHECKING:
    from pathlib import Path

    import torch

pytestmark = pytest.mark.slow  # ViT-B-32 on CPU: ~0.5 s to build, ~0.1 s per image

VIT = get_model_spec("ViT-B-32/laion2b_s34b_b79k")
#: A config open_clip 3.3 ships whose preprocessing differs from ViT-B-32's in every respect
#: (mean/std 0.5, bilinear, squash), builds offline (timm tower, open_clip's own tokenizer)
#: and is small. Not in mrag's registry: the test declares it the way a user would.
PE = ModelSpec(
    name="PE-Core-T-16-384/meta",
    family="open_clip",
    architecture="PE-Core-T-16-384",
    embed_dim=512,
    image_size=384,
    resize_mode="squash",
    interpolation="bilinear",
    pretrained_tag="meta",
    hub_id="timm/PE-Core-T-16-384",
)


def _seeded(architecture: str, seed: int = 1234) -> torch.nn.Module:
    """A random-init model whose weights are exact in fp16, so a half-size checkpoint holds
    them without loss (ViT-B-32 in fp32 would be a 600 MB file)."""
    import open_clip
    import torch

    torch.manual_seed(seed)
    return open_clip.create_model(architecture, pretrained=None).half().float().eval()


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    """The seeded in-memory ViT-B-32 and its state dict saved under the hub repo's file name."""
    import torch

    model = _seeded("ViT-B-32")
    path = tmp_path_factory.mktemp("vit") / VIT.hub_filename  # open_clip_pytorch_model.bin
    torch.save({k: v.half() for k, v in model.state_dict().items()}, path)
    return model, path


def _reference_vectors(model: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    """The in-memory model on (N, S, S, 3) uint8 pixels, normalised as open_clip's tag says."""
    import open_clip
    import torch

    cfg = open_clip.get_pretrained_cfg(VIT.architecture, VIT.pretrained_tag)
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    with torch.inference_mode():
        return model.encode_image((images - mean) / std, normalize=True).numpy()


def _assert_same_model(embedder: ClipEmbedder, model: torch.nn.Module) -> None:
    import open_clip
    import torch

    pixels = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        embedder.embed_images(pixels), _reference_vectors(model, pixels), atol=2e-5
    )
    texts = ["a photo of a cat", "a diagram of a volcano"]
    with torch.inference_mode():
        tokens = open_clip.get_tokenizer("ViT-B-32")(texts)
        expected = model.encode_text(tokens, normalize=True).numpy()
    np.testing.assert_allclose(embedder.embed_texts(texts), expected, atol=2e-5)
    cfg = open_clip.get_model_preprocess_cfg(embedder.model)
    tag = open_clip.get_pretrained_cfg(VIT.architecture, VIT.pretrained_tag)
    assert {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")} == {
        k: tag[k] for k in ("mean", "std", "interpolation", "resize_mode")
    }


def test_pretrained_spec_loads_a_local_checkpoint(vit) -> None:
    model, path = vit
    embedder = ClipEmbedder(VIT, weights=str(path), num_threads=2)
    _assert_same_model(embedder, model)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert embedder.weights_id == f"local:{path} sha256:{digest}"


@pytest.mark.integration
def test_pretrained_spec_loads_an_object_storage_prefix(vit, s3_bucket: str, tmp_path) -> None:
    """A mirror of the hub repo (config + safetensors checkpoint) under an ``s3://`` prefix."""
    import boto3
    import safetensors.torch

    model, _ = vit
    checkpoint = tmp_path / "open_clip_model.safetensors"
    state = {k: v.half().contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(state, str(checkpoint))
    s3 = boto3.client("s3")
    s3.upload_file(str(checkpoint), s3_bucket, "models/vit-b-32/open_clip_model.safetensors")
    s3.put_object(Bucket=s3_bucket, Key="models/vit-b-32/open_clip_config.json", Body=b"{}")
    prefix = f"s3://{s3_bucket}/models/vit-b-32/"

    embedder = ClipEmbedder(VIT, weights=prefix, num_threads=2)
    _assert_same_model(embedder, model)
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16]
    assert embedder.weights_id == f"{prefix} sha256:{digest}"


def _photo(width: int, height: int, seed: int):
    """Photo-like content: colour gradients, a dozen shapes, blur and sensor-like noise."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], -1) * 255
    base = base * rng.uniform(0.3, 1.0, 3) + rng.uniform(0, 80, 3)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(min(width, height) // 20, min(width, height) // 4))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([cx - r, cy - r, cx + r, cy + r], fill=fill)
    noisy = np.asarray(img.filter(ImageFilter.GaussianBlur(1.5))) + rng.normal(
        0, 12, (height, width, 3)
    )
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


#: Landscape, tall portrait, large square (a JPEG the decoder reads at half scale), panorama.
PHOTOS = {
    "landscape-640x480.jpg": (640, 480, "JPEG"),
    "portrait-300x900.png": (300, 900, "PNG"),
    "square-1024x1024.jpg": (1024, 1024, "JPEG"),
    "panorama-1200x300.png": (1200, 300, "PNG"),
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[Path, bytes]:
    root = tmp_path_factory.mktemp("photos")
    out = {}
    for i, (name, (width, height, fmt)) in enumerate(PHOTOS.items()):
        data = encode(_photo(width, height, i), fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        (root / name).write_bytes(data)
        out[root / name] = data
    return out


def _mrag_vectors(spec: ModelSpec, weights: str, photos: dict, preprocess=None) -> np.ndarray:
    """The ingest path: the decode stage (resize/crop as shipped to it) → the CLIP embedder."""
    preprocess = preprocess or spec.image_preprocess
    batch = {
        "uri": [str(p) for p in photos],
        "size": [len(d) for d in photos.values()],
        "etag": [""] * len(photos),
        "mtime": [0.0] * len(photos),
        "fingerprint": ["f"] * len(photos),
    }
    rows = DecodeStage(IngestConfig(max_image_pixels=10_000_000), preprocess=preprocess)(batch)
    assert rows["error_class"].to_pylist() == [""] * len(photos)
    side = preprocess.size_px
    pixels = np.stack(
        [np.frombuffer(p, np.uint8).reshape(side, side, 3) for p in rows["pixels"].to_pylist()]
    )
    return ClipEmbedder(spec, weights=weights, num_threads=2).embed_images(pixels)


@pytest.mark.parametrize("spec", [VIT, PE], ids=lambda s: s.name)
def test_vectors_match_open_clip_own_transforms(spec, photos, tmp_path) -> None:
    import open_clip
    import torch
    from PIL import Image

    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({k: v.half() for k, v in _seeded(spec.architecture).state_dict().items()}, path)
    tag = open_clip.get_pretrained_cfg(spec.architecture, spec.pretrained_tag)
    model, _, preprocess = open_clip.create_model_and_transforms(
        spec.architecture,
        pretrained=str(path),
        image_mean=tag["mean"],
        image_std=tag["std"],
        image_interpolation=tag["interpolation"],
        image_resize_mode=tag["resize_mode"],
    )
    with torch.inference_mode():
        images = [preprocess(Image.open(io.BytesIO(d)).convert("RGB")) for d in photos.values()]
        reference = model.eval().encode_image(torch.stack(images), normalize=True).numpy()

    cosines = np.sum(_mrag_vectors(spec, str(path), photos) * reference, axis=1)
    print(spec.name, dict(zip(PHOTOS, np.round(cosines, 6).tolist(), strict=True)))
    assert np.all(cosines >= 0.999), cosines

    # The photos tell preprocessing rules apart: the other config's resize misses the bar.
    other = "shortest" if spec.resize_mode == "squash" else "squash"
    wrong = dataclasses.replace(spec.image_preprocess, resize_mode=other)
    wrong_cosines = np.sum(_mrag_vectors(spec, str(path), photos, wrong) * reference, axis=1)
    assert wrong_cosines.min() < 0.99, wrong_cosines
