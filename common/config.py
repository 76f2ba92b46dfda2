"""How every role is configured: one frozen, validated config per role, built from one mapping.

Flags, the environment and a config file each become a plain mapping from setting names to
values; `build()` turns that mapping into the role's frozen config and checks it once, naming the
setting and the reason for each problem (ConfigError). The configs live beside their roles
(master/config.py, receiver/config.py, worker/config.py), since they hold each role's own pieces;
what they share is here: the link to the master (its URL and the token every client presents, an
explicit field rather than a process-wide default), the datagram key, and the rule that a server
reachable beyond this machine needs a secret.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from common import auth
from common.errors import ConfigError, MasterUnavailable
from common.masterclient import DEFAULT_TIMEOUT_S, MasterClient, parse_master_url
from common.protocol import KEY_ENV, key_from
from common.runtime import is_loopback

T = TypeVar("T")
log = logging.getLogger(__name__)
DEFAULT_MASTER_URL = "http://127.0.0.1:8000"


def build(cls: type[T], values: Mapping[str, Any], *, where: str = "") -> T:
    """A frozen config of type `cls` from a mapping of its field names; ConfigError names an unknown
    setting or the one its checks refused (prefixed by `where`, e.g. a config file's name and table)."""
    prefix = f"{where}: " if where else ""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{prefix}unknown setting(s) {', '.join(unknown)}")
    try:
        return cls(**values)
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(f"{prefix}{e}") from e


def config_or_exit(prog: str, make: Callable[[], T]) -> T:
    """The config `make()` builds from flags, or its error as one line on stderr and exit code 2, as a
    usage error (a role's main: `config = config_or_exit("python -m x", lambda: from_flags(parse_args(argv)))`)."""
    try:
        return make()
    except (ValueError, ConfigError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


@dataclass(frozen=True)
class MasterLink:
    """Where the master is and the token its clients present (None: the master wants none)."""

    url: str = DEFAULT_MASTER_URL
    token: str | None = None

    def __post_init__(self) -> None:
        try:
            parse_master_url(self.url)
        except ValueError as e:
            raise ConfigError(str(e)) from e

    @classmethod
    def load(cls, url: str, token_file: str = "", env: Mapping[str, str] = os.environ) -> MasterLink:
        """The link with its token read from `token_file`, else from $FRAMEHIVE_TOKEN."""
        return cls(url, auth.load_token(token_file or None, env))

    def client(self, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> MasterClient:
        """A client of this master that presents the token."""
        return MasterClient(self.url, timeout_s=timeout_s, token=self.token)

    def fetch_config(self, kind: str, name: str, wait_s: float = 60.0) -> dict[str, Any]:
        """What the master's config file says about receiver or camera `name` (ConfigError with the
        master's reason when it has no file or no such name), waiting up to `wait_s` for a master that
        is still starting."""
        deadline = time.monotonic() + wait_s
        delay = 0.2
        with self.client(timeout_s=5.0) as client:
            while True:
                try:
                    return client.call("get_config", kind, name)
                except xmlrpc.client.Fault as e:
                    raise ConfigError(f"the master at {self.url} has no config for {kind} {name!r}: "
                                      f"{e.faultString.partition(': ')[2] or e.faultString}") from None
                except MasterUnavailable as e:
                    if time.monotonic() + delay > deadline:
                        raise ConfigError(f"no master answered at {self.url} within {wait_s:.0f} s: {e}") from None
                    log.info("waiting for the master at %s (%s)", self.url, e)
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)


def load_key(key_file: str = "", env: Mapping[str, str] = os.environ) -> bytes | None:
    """The shared datagram/imagezmq key from `key_file` (hex), else from $FRAMEHIVE_KEY, else None."""
    try:
        text = Path(key_file).read_text() if key_file else None
        return key_from(text, key_file, env.get(KEY_ENV))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the key file: {e}") from e
    except ValueError as e:
        raise ConfigError(str(e)) from e


def require_secret(host: str, has_secret: bool, insecure: bool, refusal: str) -> None:
    """Refuse (ConfigError with `refusal`) to serve on an address beyond loopback without a secret,
    unless the user said --insecure."""
    if not is_loopback(host) and not has_secret and not insecure:
        raise ConfigError(refusal)
