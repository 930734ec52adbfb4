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
