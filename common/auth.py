"""The cluster's shared token: where it comes from, how a request carries it, how it is checked.

A token is read from a file (`--token-file PATH`) or the FRAMEHIVE_TOKEN environment variable,
never from a command-line value that `ps` would show. Requests carry it as
`Authorization: Bearer <token>`; HTTP Basic with the token as the password also works, so a browser
(the dashboard) and `xmlrpc.client.ServerProxy("http://any:TOKEN@host:8000/RPC2")` can log in.
Comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.errors import ConfigError

log = logging.getLogger(__name__)

TOKEN_ENV = "FRAMEHIVE_TOKEN"
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 256


def validate(token: str, where: str) -> str:
    """A token stripped of surrounding whitespace, or ConfigError saying what is wrong with it."""
    token = token.strip()
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        raise ConfigError(f"the token in {where} must be {MIN_TOKEN_CHARS}..{MAX_TOKEN_CHARS} characters, "
                          f"got {len(token)}; make one with: python -c 'import secrets; print(secrets.token_hex(24))'")
    if not token.isprintable() or any(c.isspace() for c in token) or not token.isascii():
        raise ConfigError(f"the token in {where} must be printable ASCII without spaces")
    return token


def load_token(path: str | None, env: Mapping[str, str] = os.environ) -> str | None:
    """The token from `path` if given, else from $FRAMEHIVE_TOKEN, else None (no authentication)."""
    if path:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            mode = p.stat().st_mode
        except OSError as e:
            raise ConfigError(f"cannot read the token file {path}: {e.strerror or e}") from e
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            log.warning("token file %s is readable by other users: chmod 600 it", path)
        return validate(text, path)
    if env.get(TOKEN_ENV):
        return validate(env[TOKEN_ENV], f"${TOKEN_ENV}")
    return None


def header(token: str) -> str:
    """The Authorization header value for `token`."""
    return f"Bearer {token}"


def presented(authorization: str | None) -> str | None:
    """The token an Authorization header presents (Bearer, or Basic with it as the password)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def allowed(authorization: str | None, token: str) -> bool:
    """Whether the header presents `token` (constant-time in the token's content)."""
    got = presented(authorization)
    return got is not None and hmac.compare_digest(got.encode(), token.encode())


REFUSAL = (b"a token is required: send 'Authorization: Bearer <token>' "
           b"(clients read it from --token-file or $FRAMEHIVE_TOKEN)\n")


def refuse(handler: Any) -> None:
    """Answer an HTTP request that lacks the token (401) on a BaseHTTPRequestHandler, and close the
    connection: an unauthenticated body is never read."""
    handler.send_response(401)
    handler.send_header("WWW-Authenticate", 'Basic realm="framehive", charset="UTF-8"')
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Content-Length", str(len(REFUSAL)))
    handler.send_header("Connection", "close")
    handler.close_connection = True
    handler.end_headers()
    handler.wfile.write(REFUSAL)
