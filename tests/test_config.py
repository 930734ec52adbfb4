from __future__ import annotations

import pytest

from mrag.config import load_config
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
