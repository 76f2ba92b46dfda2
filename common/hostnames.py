"""Whether a host named in the cluster file is this machine: its host name (with or without its
domain) or any address of its interfaces, so `host = "10.0.0.21"`, `host = "pi"` and
`host = "pi.lan"` all mean the Raspberry Pi called pi. No DNS lookup is made (a host whose resolver
is down must still know itself)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

import psutil


def local_names() -> frozenset[str]:
    """This machine's host name, its first label, and the addresses of its interfaces, lower case (not
    loopback ones: `host = "127.0.0.1"` in a file shared by several machines would mean all of them)."""
    host = socket.gethostname().lower()
    names = {host, host.split(".")[0]}
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                address = a.address.split("%")[0].lower()  # fe80::1%eth0 -> fe80::1
                if not ipaddress.ip_address(address).is_loopback:
                    names.add(address)
    return frozenset(names)


def is_this_host(name: str, names: Iterable[str] | None = None) -> bool:
    """Whether `name` (a host name, a name with its domain, or an address; "[::1]" too) is this machine."""
    wanted = name.strip().lower().strip("[]")
    if not wanted:
        return False
    mine = frozenset(names) if names is not None else local_names()
    return wanted in mine or ("." in wanted and not wanted.replace(".", "").isdigit()
                              and wanted.split(".")[0] in mine)
