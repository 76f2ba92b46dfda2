"""Which `host` keys of the cluster file mean this machine (common/hostnames.py)."""

from __future__ import annotations

import socket

import psutil

from common.hostnames import is_this_host, local_names

PI = frozenset({"pi", "10.0.0.21", "fd00::21"})


def test_a_host_is_its_name_its_name_with_a_domain_or_an_address():
    for name in ("pi", "PI", "pi.lan", "pi.example.org", "10.0.0.21", "fd00::21", "[fd00::21]", " pi "):
        assert is_this_host(name, PI), name
    for name in ("", "pie", "raspberry.pi", "10.0.0.2", "10.0.0.211", "21.0.0.10", "fd00::2"):
        assert not is_this_host(name, PI), name


def test_this_machine_knows_its_own_name_and_addresses_but_not_loopback():
    names = local_names()
    assert socket.gethostname().lower() in names and is_this_host(socket.gethostname())
    ours = [a.address for addrs in psutil.net_if_addrs().values() for a in addrs
            if a.family == socket.AF_INET and not a.address.startswith("127.")]
    assert all(is_this_host(a) for a in ours)
    assert not is_this_host("127.0.0.1") and not is_this_host("::1"), "loopback names every machine: none"


def test_framehive_up_publishes_the_cameras_whose_host_is_this_machine_by_any_name(tmp_path):
    from cluster.up import Up

    address = next(a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                   if a.family == socket.AF_INET and not a.address.startswith("127."))
    path = tmp_path / "framehive.toml"
    path.write_text("".join(f'[cameras.{name}]\nsource = "synthetic"\nhost = "{host}"\n' for name, host in
                            (("by-name", socket.gethostname()), ("by-address", address),
                             ("by-domain", f"{socket.gethostname()}.lan"), ("elsewhere", "another-host"))))
    here = {k for k in Up(str(path), workers=0).wanted() if k.startswith("publisher")}
    assert here == {"publisher by-name", "publisher by-address", "publisher by-domain"}
    there = {k for k in Up(str(path), workers=0, host="another-host").wanted() if k.startswith("publisher")}
    assert there == {"publisher elsewhere"}
