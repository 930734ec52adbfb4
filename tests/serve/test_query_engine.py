"""The in-process engine's cache (``QueryEngine.for_config``) honours every setting of a config.

Here rather than in ``tests/test_query.py`` because the engine validates with the API's request
model and the limits it must not ignore are the server's (``serve.max_k``).
"""

from __future__ import annotations

import pytest

from mrag.config import load_config
from mrag.errors import MragError
from mrag.query import QueryEngine


def _config(db: str, **overrides: object):
    return load_config(profile="offline", overrides={"db_uri": db, **overrides})


def test_a_later_configs_max_k_is_not_ignored(tmp_path) -> None:
    db = str(tmp_path / "db")  # no table yet: searches return no hits
    strict = QueryEngine.for_config(_config(db, **{"serve.max_k": 5}))
    with pytest.raises(MragError, match="k must be an integer from 1 to 5, got 6"):
        strict.search("a red car", k=6)

    roomy = QueryEngine.for_config(_config(db, **{"serve.max_k": 50}))
    assert roomy is not strict
    assert roomy.search("a red car", k=30) == []
    assert roomy.clip is strict.clip and roomy.text is strict.text  # models load once

    assert QueryEngine.for_config(_config(db, **{"serve.max_k": 5})) is strict  # equal configs


def test_every_setting_is_part_of_the_key(tmp_path) -> None:
    base = QueryEngine.for_config(_config(str(tmp_path / "a")))
    for changed in (
        _config(str(tmp_path / "b")),
        _config(str(tmp_path / "a"), **{"ingest.max_image_pixels": 1000}),
        _config(str(tmp_path / "a"), **{"serve.max_body_bytes": 1024}),
    ):
        engine = QueryEngine.for_config(changed)
        assert engine is not base and engine.config == changed
