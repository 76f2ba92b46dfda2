"""The shared token: where it is read from and how a request presents it."""

from __future__ import annotations

import base64
import os

import pytest

from common import auth
from common.errors import ConfigError

TOKEN = "t0k3n-" + "a" * 20


def test_bearer_and_basic_present_the_token():
    basic = "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    assert auth.allowed(f"Bearer {TOKEN}", TOKEN) and auth.allowed(basic, TOKEN)
    assert auth.allowed(auth.header(TOKEN), TOKEN)


@pytest.mark.parametrize("header", [None, "", "Bearer", f"Bearer {TOKEN}x", f"bearer {TOKEN[:-1]}",
                                    "Basic !!!", "Basic " + base64.b64encode(TOKEN.encode()).decode(),
                                    f"Token {TOKEN}", "Bearer ünï"])
def test_anything_else_is_refused(header):
    assert not auth.allowed(header, TOKEN)


def test_tokens_come_from_a_file_or_the_environment_and_are_checked(tmp_path, caplog):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    os.chmod(path, 0o600)
    assert auth.load_token(str(path), {}) == TOKEN
    assert auth.load_token(None, {"FRAMEHIVE_TOKEN": TOKEN}) == TOKEN
    assert auth.load_token(None, {}) is None
    os.chmod(path, 0o644)
    assert auth.load_token(str(path), {}) == TOKEN
    assert "readable by other users" in caplog.text
    with pytest.raises(ConfigError, match="16..256 characters"):
        auth.load_token(None, {"FRAMEHIVE_TOKEN": "short"})
    path.write_text("has a space in the middle of it")
    with pytest.raises(ConfigError, match="without spaces"):
        auth.load_token(str(path), {})
    with pytest.raises(ConfigError, match="cannot read the token file"):
        auth.load_token(str(tmp_path / "missing"), {})
