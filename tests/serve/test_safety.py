"""Safe by default: ``mrag serve`` keeps to loopback unless given a token, and says so in one line.

(The API's own limits, auth and its refusal to fetch what a client names are tested over real
HTTP in ``tests/serve/test_app.py``; the token's absence from every log of a run in
``tests/serve/test_shutdown.py``.)
"""

from __future__ import annotations

import subprocess

import pytest

from mrag.config import load_config
from mrag.errors import MragError
from mrag.serve.runner import check_exposure, is_loopback_host
from tests.processes import mrag_command, user_env


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.53", "localhost", "::1", "[::1]", "::ffff:127.0.0.1"]
)
def test_loopback_needs_no_token(host: str) -> None:
    assert is_loopback_host(host)
    check_exposure(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.7", "mrag.example.com"])
def test_any_other_address_needs_a_token(host: str) -> None:
    assert not is_loopback_host(host)
    with pytest.raises(MragError, match=f"refusing to serve on {host} without a token"):
        check_exposure(host, None)
    check_exposure(host, "a-token")


def test_the_default_host_is_loopback() -> None:
    assert load_config(profile="offline").serve.host == "127.0.0.1"


@pytest.mark.parametrize("token", [None, "   "], ids=["unset", "blank"])
def test_mrag_serve_on_a_public_address_without_a_token_exits_2_in_one_line(
    tmp_path, token: str | None
) -> None:
    env = user_env(**({} if token is None else {"MRAG_API_TOKEN": token}))
    result = subprocess.run(
        [mrag_command(), "serve", "--db", str(tmp_path / "db"), "--host", "0.0.0.0"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mrag serve: error: refusing to serve on 0.0.0.0 without a token")
    assert "MRAG_API_TOKEN" in lines[0]
    assert not (tmp_path / "db").exists()  # refused before anything started
