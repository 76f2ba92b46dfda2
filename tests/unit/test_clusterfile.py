"""framehive.toml is checked whole: names, ports, receivers, pipelines, rules; errors name file, line and key."""

from __future__ import annotations

import re

import pytest

from cluster.local import ROOT
from common.errors import ConfigError
from master.clusterfile import load, parse

GOOD = """
[receivers.a]
ports = "6000-6003"
[receivers.b]
host = "10.0.0.2"
ports = [7000, 7001]
[cameras.door]
source = "synthetic"
receiver = "a"
[cameras.yard]
source = "rtsp://cam/stream"
receiver = "a"
port = 6000
pipeline = "objects:car+person"
[cameras.side]
source = 0
receiver = "b"
detect = "motion:0.01"
[[rule]]
name = "door-person"
cameras = ["door", "side"]
label = "person"
"""


def test_a_good_file_names_cameras_and_assigns_free_ports():
    c = parse(GOOD)
    assert c.cameras["yard"].port == 6000 and c.cameras["door"].port == 6001 and c.cameras["side"].port == 7000
    assert c.camera_names() == {6000: "yard", 6001: "door", 7000: "side"}
    assert c.cameras["side"].source == "0" and c.cameras["yard"].pipeline.startswith("objects")
    assert c.rules[0].ports == (6001, 7000)
    view = c.receiver_view("a")
    assert view["ports"]["6001"] == {"camera": "door", "pipeline": "person", "detect": "every"}


def test_a_reload_keeps_a_cameras_port_when_another_goes():
    first = parse(GOOD)
    without_yard = GOOD.replace('port = 6000\n', '').replace('[cameras.yard]\nsource = "rtsp://cam/stream"\n'
                                                             'receiver = "a"\n', '[cameras.gate]\nsource = "x.mp4"\n'
                                                             'receiver = "a"\n')
    second = parse(without_yard, previous=first)
    assert second.cameras["door"].port == 6001, "door keeps its port"
    assert second.cameras["gate"].port not in (6001, 7000)


@pytest.mark.parametrize("edit,line,words", [
    (('source = 0\n', 'source = 0\nsize = 3\n'), 17, "cameras.side.size: unknown key"),
    (('receiver = "b"\n', 'receiver = "c"\n'), 17, "no receiver named 'c'"),
    (('port = 6000\n', 'port = 6001\n[cameras.twin]\nsource = "synthetic"\nreceiver = "a"\nport = 6001\n'), 0,
     "port 6001 is taken by camera 'yard'"),
    (('pipeline = "objects:car+person"', 'pipeline = "dog"'), 14, "unknown stage 'dog'"),
    (('detect = "motion:0.01"', 'detect = "sometimes"'), 18, "detect policy must be one of"),
    (('port = 6000\n', 'port = 5000\n'), 13, "not one of receiver 'a'"),
    (('cameras = ["door", "side"]', 'cameras = ["door", "attic"]'), 21, "no camera named 'attic'"),
    (('[cameras.door]', '[cameras.Door]'), 7, "a name is 1..48 lowercase"),
    (('[receivers.a]', '[recievers.a]'), 2, "unknown section"),
    (('source = "synthetic"\n', 'source = "synthetic\n'), 8, "invalid TOML"),
])
def test_each_mistake_is_named_with_its_line(edit, line, words):
    with pytest.raises(ConfigError) as e:
        parse(GOOD.replace(*edit), "cams.toml")
    assert words in str(e.value) and str(e.value).startswith("cams.toml:"), str(e.value)
    if line:
        assert str(e.value).startswith(f"cams.toml:{line}:"), str(e.value)


def test_the_shipped_example_is_valid():
    c = load(ROOT / "examples" / "framehive.toml")
    assert set(c.cameras) == {"hall", "yard", "front-door"} and not c.cameras["front-door"].enabled
    assert c.rules[0].ports == (c.cameras["hall"].port,)


def test_the_master_url_is_reachable_from_the_masters_host():
    assert parse('[master]\nhost = "0.0.0.0"\nport = 9000\n').master_url == "http://127.0.0.1:9000"
    assert parse('[master]\nhost = "::1"\n').master_url == "http://[::1]:8000"
    assert parse('').master_url == "http://127.0.0.1:8000"


# ----- several masters ---------------------------------------------------------------------------

SEVERAL = '''[masters.a]
host = "10.0.0.1"
[masters.b]
host = "10.0.0.2"
port = 8001
[receivers.rx-a]
master = "a"
ports = "5000-5009"
[receivers.rx-b]
master = "b"
ports = "6000-6009"
[cameras.porch]
source = "synthetic"
master = "b"
[cameras.yard]
source = "synthetic"
receiver = "rx-a"
[cameras.shop]
source = "synthetic"
[cameras.drive]
source = "synthetic"
[[rule]]
name = "at-the-porch"
label = "person"
cameras = ["porch"]
[[rule]]
name = "anywhere"
label = "person"
'''


def test_several_masters_each_own_their_receivers_cameras_and_rules():
    import zlib

    cluster = parse(SEVERAL)
    assert cluster.master_urls() == {"a": "http://10.0.0.1:8000", "b": "http://10.0.0.2:8001"}
    owners = {c.name: (c.master, c.receiver) for c in cluster.cameras.values()}
    assert owners["porch"] == ("b", "rx-b") and owners["yard"] == ("a", "rx-a")
    for name in ("shop", "drive"):  # naming neither: a stable hash of the name, the same everywhere
        want = ["a", "b"][zlib.crc32(name.encode()) % 2]
        assert owners[name] == (want, f"rx-{want}")
    b = cluster.for_master("b")
    assert b.master == {"host": "10.0.0.2", "port": 8001} and set(b.receivers) == {"rx-b"}
    assert set(b.cameras) == {n for n, (m, _) in owners.items() if m == "b"}
    assert [r.name for r in b.rules] == ["at-the-porch", "anywhere"]
    a = cluster.for_master("a")
    assert [r.name for r in a.rules] == ["anywhere"], "a rule on b's camera only is b's"
    with pytest.raises(ConfigError, match="no master named 'c'.*masters: a, b"):
        cluster.for_master("c")


@pytest.mark.parametrize(("change", "words"), [
    (lambda t: t.replace('master = "a"\nports', 'ports'), "rx-a: say which master it forwards to"),
    (lambda t: t.replace('source = "synthetic"\nmaster = "b"', 'source = "synthetic"\nmaster = "z"'),
     "no master named 'z'"),
    (lambda t: t.replace('receiver = "rx-a"', 'receiver = "rx-a"\nmaster = "b"'),
     "receiver 'rx-a' forwards to master 'a', not 'b'"),
    (lambda t: "[master]\nport = 1\n" + t, "one [master] table, or several [masters.NAME], not both"),
])
def test_several_masters_mistakes_name_their_line(change, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        parse(change(SEVERAL))


SAME_PORTS = '''[masters.a]
host = "10.0.0.1"
[masters.b]
host = "10.0.0.2"
[receivers.rx-a]
master = "a"
host = "10.0.0.11"
ports = [5000]
[receivers.rx-b]
master = "b"
host = "10.0.0.12"
ports = [5000]
[cameras.porch]
source = "synthetic"
receiver = "rx-a"
[cameras.porch.zones.door]
points = [[0, 0], [0.5, 0], [0.5, 1]]
[cameras.yard]
source = "synthetic"
receiver = "rx-b"
[[rule]]
name = "at-the-porch"
label = "person"
cameras = ["porch"]
[[rule]]
name = "into-the-door"
kind = "enter"
label = "person"
zone = "door"
'''


def test_masters_number_their_cameras_apart():
    """Two masters, each with one receiver on its own host: both cameras take port 5000, and a rule
    naming one of them (or the zone only one has) is on that camera's master only."""
    cluster = parse(SAME_PORTS)
    assert {(c.name, c.master, c.port) for c in cluster.cameras.values()} == {("porch", "a", 5000),
                                                                              ("yard", "b", 5000)}
    a, b = cluster.for_master("a"), cluster.for_master("b")
    assert [(r.name, r.ports) for r in a.rules] == [("at-the-porch", (5000,)), ("into-the-door", (5000,))]
    assert b.rules == (), "b's yard shares porch's port number, not its rules"
    assert a.camera_names() == {5000: "porch"} and b.camera_names() == {5000: "yard"}
    # within one master a port is still one camera's
    two = SAME_PORTS.replace('receiver = "rx-b"', 'receiver = "rx-b"\nport = 5000') + \
        '[cameras.gate]\nsource = "synthetic"\nreceiver = "rx-b"\nport = 5000\n'
    with pytest.raises(ConfigError, match="port 5000 is taken by camera 'yard'"):
        parse(two)
    with pytest.raises(ConfigError, match="receiver 'rx-a' has no free port left"):
        parse(SAME_PORTS + '[cameras.gate]\nsource = "synthetic"\nreceiver = "rx-a"\n')


def test_with_several_masters_a_rule_names_cameras_not_ports():
    text = SAME_PORTS.replace('cameras = ["porch"]', "ports = [5000]")
    with pytest.raises(ConfigError, match=r":\d+: rule 'at-the-porch': this file has several masters.*cameras = "):
        parse(text)


def test_a_master_key_without_masters_is_an_error():
    with pytest.raises(ConfigError, match="names a master, but the file has no"):
        parse('[cameras.porch]\nsource = "synthetic"\nmaster = "a"\n')
