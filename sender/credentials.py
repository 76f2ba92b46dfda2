"""A stream's address and its credentials: never on the command line, put into the URL only when the
stream is opened, and masked (`rtsp://user:***@host/...`) in everything that is logged or raised."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from common.errors import ConfigError

MASK = "***"
# Query parameters some cameras take credentials in (…/snapshot.cgi?user=admin&pwd=…).
SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pass", "pwd", "secret", "token", "key", "auth"})
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")


def _split_authority(rest: str) -> tuple[str, str]:
    """(userinfo, everything from the host on) of a URL with its scheme removed; userinfo is ""
    when there is none. The userinfo ends at the last @ before the path; an @ or / left unencoded in a
    password moves that to the last @ of all, so a malformed URL is masked too much, never too little."""
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    at = rest.rfind("@", 0, end)
    if at < 0 and end < len(rest):
        at = rest.rfind("@")
    return (rest[:at], rest[at:]) if at >= 0 else ("", rest)


def _mask_query(rest: str) -> str:
    head, q, query = rest.partition("?")
    if not q:
        return rest
    query, hash_, fragment = query.partition("#")
    params = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        params.append(f"{name}={MASK}" if eq and name.lower() in SECRET_QUERY_KEYS else item)
    return f"{head}?{'&'.join(params)}{hash_}{fragment}"


def mask_url(url: str) -> str:
    """`url` with its password (and query values named like secrets) replaced by ***: safe to log."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, tail = _split_authority(rest)
    user, colon, _ = userinfo.partition(":")
    if colon:
        userinfo = f"{user}:{MASK}"
    return f"{scheme}://{userinfo}{_mask_query(tail)}"


def mask_urls(text: str) -> str:
    """Every URL in `text` masked (for messages that may quote one, such as a library's error)."""
    return _URL.sub(lambda m: mask_url(m.group(0)), text)


def _literal_secrets(url: str) -> list[str]:
    """What in `url` is a password written out rather than a ${VARIABLE}."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return []
    userinfo, tail = _split_authority(rest)
    found = []
    _, colon, password = userinfo.partition(":")
    if colon and _VAR.sub("", password):
        found.append("a password")
    _, q, query = tail.partition("?")
    for item in query.partition("#")[0].split("&") if q else []:
        name, eq, value = item.partition("=")
        if eq and name.lower() in SECRET_QUERY_KEYS and _VAR.sub("", value):
            found.append(f"a {name}= value")
    return found


def expand(template: str, env: Mapping[str, str]) -> str:
    """`template` with each ${NAME} replaced by env[NAME]; values in the user, password and query are
    percent-encoded (a password may hold @, : or /). ConfigError names a variable that is not set."""
    scheme, sep, rest = template.partition("://")
    userinfo, tail = _split_authority(rest) if sep else ("", template)
    head, q, query = tail.partition("?")

    def sub(text: str, encode: bool) -> str:
        def one(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                raise ConfigError(f"--source names ${{{name}}}, which is not set in the environment")
            return quote(env[name], safe="") if encode else env[name]
        return _VAR.sub(one, text)

    if not sep:
        return sub(template, False)
    return f"{scheme}://{sub(userinfo, True)}{sub(head, False)}{q}{sub(query, True)}"


@dataclass(frozen=True)
class StreamAddress:
    """Where a network stream is and how to log in: `url()` builds the secret URL for the moment of
    opening; `masked` and `scrub()` are what may be shown."""

    template: str  # as given: may hold ${VARIABLES}, never a password
    username: str = ""
    password: str = field(default="", repr=False)
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_flags(cls, source: str, *, username: str = "", password: str = "",
                   env: Mapping[str, str]) -> StreamAddress:
        """Check a --source URL and its credentials once, at start: no password written into the URL,
        every ${VARIABLE} set, a user given once. ConfigError says what is wrong (never the secret)."""
        literal = _literal_secrets(source)
        if literal:
            raise ConfigError(f"--source holds {' and '.join(literal)}: a command line is visible to every user "
                              "(ps, shell history); give --password-file, or ${VARIABLE} in the URL")
        if password and not username:
            raise ConfigError("--password-file needs --username")
        expanded = expand(source, env)  # every variable is set
        if username and _split_authority(expanded.partition("://")[2])[0]:
            raise ConfigError("--username given, but the --source URL already names a user: give it once")
        return cls(source, username, password, {name: env[name] for name in _VAR.findall(source)})

    def url(self) -> str:
        """The URL to open, credentials inserted: pass it to the library, never to a log."""
        url = expand(self.template, self.env)
        if not self.username:
            return url
        scheme, _, rest = url.partition("://")
        login = quote(self.username, safe="") + (f":{quote(self.password, safe='')}" if self.password else "")
        return f"{scheme}://{login}@{rest}"

    @property
    def masked(self) -> str:
        """The URL as it may be logged: rtsp://user:***@host/path."""
        return mask_url(self.url())

    def scrub(self, text: str) -> str:
        """`text` with every URL masked and any copy of the password (plain or percent-encoded)
        replaced by ***: for messages that come from a library."""
        text = mask_urls(text)
        for secret in self._secrets():
            text = text.replace(secret, MASK)
        return text

    def _secrets(self) -> list[str]:
        userinfo = _split_authority(self.url().partition("://")[2])[0]
        found = [self.password, quote(self.password, safe=""), userinfo.partition(":")[2]]
        _, q, query = self.url().partition("?")
        for item in query.split("&") if q else []:
            name, eq, value = item.partition("=")
            if eq and name.lower() in SECRET_QUERY_KEYS:
                found.append(value)
        found += [unquote(s) for s in found]
        return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)
