from __future__ import annotations

import pickle
import typing

import pytest

from mrag.config import (
    DOCUMENT_EXTENSIONS,
    DTYPES,
    EXTENSION_KINDS,
    IMAGE_EXTENSIONS,
    PROFILES,
    IndexConfig,
    IngestConfig,
    MragConfig,
    load_config,
)
from mrag.errors import ConfigError


def test_profiles_pick_models_and_env_selects_profile(monkeypatch) -> None:
    monkeypatch.setenv("MRAG_PROFILE", "default")
    assert load_config().clip_model == "ViT-B-32/laion2b_s34b_b79k"
    monkeypatch.setenv("MRAG_PROFILE", "offline")
    offline = load_config()
    assert offline.clip_model == "tiny-clip-random"
    assert offline.text_model == "all-MiniLM-L6-v2-packaged"
    assert load_config(profile="default").profile == "default"


def test_yaml_then_overrides_win(tmp_path) -> None:
    path = tmp_path / "mrag.yaml"
    path.write_text(
        "db_uri: s3://bucket/db\ningest:\n  embed_batch_size: 64\n  extensions: [JPG]\n"
    )
    config = load_config(path, overrides=["ingest.embed_batch_size=8", "serve.port=9000"])
    assert config.db_uri == "s3://bucket/db"
    assert config.ingest.embed_batch_size == 8
    assert config.ingest.extensions == (".jpg",)
    assert config.serve.port == 9000


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ingest.embed_batch_size=many", "ingest.embed_batch_size: expected int"),
        ("ingest.embed_batch_size=0", "ingest.embed_batch_size: must be > 0"),
        ("ingest.dtype=fp8", "ingest.dtype: 'fp8' not allowed; allowed: auto, fp32, fp16, bf16"),
        ("ingest.colour=blue", "ingest.colour: unknown field"),
        ("profile=fast", "profile: unknown profile 'fast'; allowed: default, offline"),
        ("ingest.retry_failed=maybe", "ingest.retry_failed: expected bool"),
        ("no-equals-sign", "expected section.field=value"),
    ],
)
def test_validation_errors_name_the_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(overrides=[override])


def test_import_mrag_is_light() -> None:
    import subprocess
    import sys

    heavy = "('torch', 'ray', 'lancedb', 'transformers')"
    code = f"import sys, mrag; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("clip_model: 3\n", "clip_model: expected a string, got 3"),
        ("db_uri: {a: 1}\n", "db_uri: expected a string, got {'a': 1}"),
        ("serve:\n  port: 99999\n", "serve.port: must be <= 65535, got 99999"),
        ("serve:\n  port: 0\n", "serve.port: must be >= 1, got 0"),
        ("ingest:\n  torch_threads: -3\n", "ingest.torch_threads: must be >= 0, got -3"),
        ("index:\n  recall_sample: 0\n", "index.recall_sample: must be >= 1, got 0"),
        ("ingest:\n  embed_num_gpus: -1\n", "ingest.embed_num_gpus: must be >= 0"),
        ("ingest:\n  decode_num_cpus: 0\n", "ingest.decode_num_cpus: must be > 0"),
        ("ingest:\n  embed_batch_size: yes\n", "ingest.embed_batch_size: expected a number"),
        ("ingest:\n  embed_batch_size: 2.5\n", "ingest.embed_batch_size: expected int"),
        ("ingest:\n  extensions: [jpg, 3]\n", r"ingest.extensions\[1\]: expected a string"),
        ("ingest:\n  extensions: []\n", "ingest.extensions: must have at least 1 item"),
        ("ingest:\n  chunk_overlap_tokens: 200\n", "ingest.chunk_overlap_tokens: must be < chunk"),
        (
            "serve:\n  encoder_batch_wait_s: .inf\n",
            "serve.encoder_batch_wait_s: must be a finite number",
        ),
        ("ingest: 5\n", "ingest: expected a mapping, got 5"),
        ("bogus: 1\n", "bogus: unknown field; allowed: clip_model, clip_weights, db_uri"),
    ],
)
def test_nonsense_in_yaml_is_refused_naming_the_field(tmp_path, yaml_text, message) -> None:
    path = tmp_path / "mrag.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert "\n" not in str(info.value)


def test_unknown_field_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=["ingest.bogus=1"])
    message = str(info.value)
    assert message.startswith("ingest.bogus: unknown field; allowed: audio_overlap_s, ")
    assert "embed_batch_size" in message and "port" not in message


def test_cli_strings_are_converted_to_the_field_types() -> None:
    config = load_config(
        overrides=[
            "ingest.embed_batch_size=64",
            "ingest.retry_failed=false",
            "ingest.ocr=no",
            "index.auto_after_ingest=0",
            "ingest.embed_num_gpus=0.25",
            "ingest.extensions=JPG, .Png,pdf",
            "seed=7",
        ]
    )
    assert config.ingest.embed_batch_size == 64
    assert config.ingest.retry_failed is False and config.ingest.ocr is False
    assert config.index.auto_after_ingest is False
    assert config.ingest.embed_num_gpus == 0.25
    assert config.ingest.extensions == (".jpg", ".png", ".pdf")
    assert config.seed == 7
    assert load_config(overrides=["ingest.retry_failed=YES"]).ingest.retry_failed is True


def test_yaml_values_keep_their_types(tmp_path) -> None:
    path = tmp_path / "mrag.yaml"
    path.write_text(
        "seed: 3\ningest:\n  embed_num_cpus: 2\n  retry_failed: true\n  extensions: jpg,png\n"
        "serve:\n  encoder_batch_wait_s: 0\n  host: 0.0.0.0\n"
    )
    config = load_config(path)
    assert config.seed == 3 and config.ingest.embed_num_cpus == 2.0
    assert config.ingest.retry_failed is True
    assert config.ingest.extensions == (".jpg", ".png")
    assert config.serve.encoder_batch_wait_s == 0.0 and config.serve.host == "0.0.0.0"


def test_defaults_and_profile_models_survive_the_models() -> None:
    config = MragConfig(profile="offline")
    assert (config.clip_model, config.text_model) == (
        "tiny-clip-random",
        "all-MiniLM-L6-v2-packaged",
    )
    assert MragConfig(profile="offline", clip_model="ViT-B-32/x").clip_model == "ViT-B-32/x"
    assert config.ingest.extensions == tuple(EXTENSION_KINDS)
    assert set(IMAGE_EXTENSIONS + DOCUMENT_EXTENSIONS) < set(EXTENSION_KINDS)
    assert config.ingest.embed_batch_size == 32 and config.serve.port == 8000
    assert config.index.recall_sample == 200 and config.ingest.dtype == "auto"
    assert set(typing.get_args(MragConfig.model_fields["profile"].annotation)) == set(PROFILES)
    assert typing.get_args(IngestConfig.model_fields["dtype"].annotation) == DTYPES


def test_direct_construction_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^ingest.embed_batch_size: must be > 0, got 0$"):
        IngestConfig(embed_batch_size=0)
    with pytest.raises(ConfigError, match=r"^serve.port: must be <= 65535, got 70000$"):
        MragConfig(serve={"port": 70000})
    with pytest.raises(ConfigError, match="index.recall_sample: must be >= 1"):
        IndexConfig.model_validate({"recall_sample": 0})


def test_assignment_is_validated_and_a_refused_value_is_not_kept() -> None:
    config = load_config()
    config.serve.host = "0.0.0.0"
    config.serve.port = "9000"  # what argparse hands over without type=int
    assert (config.serve.host, config.serve.port) == ("0.0.0.0", 9000)
    with pytest.raises(ConfigError, match="serve.port: must be <= 65535, got 99999"):
        config.serve.port = 99999
    with pytest.raises(ConfigError, match="serve.host: expected a string"):
        config.serve.host = 5
    with pytest.raises(ConfigError, match="serve.hots: unknown field"):
        config.serve.hots = "0.0.0.0"
    with pytest.raises(ConfigError, match="ingest.chunk_overlap_tokens: must be < chunk_max"):
        config.ingest.chunk_max_tokens = 10  # below the overlap of 40
    with pytest.raises(ConfigError, match=r"^ingest.embed_batch_size: must be > 0"):
        config.ingest = {"embed_batch_size": 0}
    assert config.serve.port == 9000 and config.ingest.chunk_max_tokens == 200
    config.ingest.extensions = "JPG"
    assert config.ingest.extensions == (".jpg",)


def test_config_pickles_and_passes_as_keyword_arguments() -> None:
    config = load_config(profile="offline", overrides=["ingest.embed_batch_size=8"])
    restored = pickle.loads(pickle.dumps(config))
    assert restored == config and restored.ingest.embed_batch_size == 8
    with pytest.raises(ConfigError):
        restored.ingest.embed_batch_size = -1  # still validated after the round trip

    def stage(*, ingest: IngestConfig, seed: int) -> int:
        return ingest.embed_batch_size + seed

    assert stage(ingest=restored.ingest, seed=restored.seed) == 8
