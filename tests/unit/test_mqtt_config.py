"""MQTT settings: the [mqtt] table of framehive.toml (every mistake named with its line and key) and the
--mqtt flags (a flag given wins; paths relative to the config file; the password read from its file,
never shown); without either, the master has no MQTT at all."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from master.__main__ import parse_args
from master.clusterfile import parse
from master.config import from_flags


@pytest.mark.parametrize("table,expect", [
    ('qos = 1', "framehive.toml:1: mqtt: missing required key 'url'"),
    ('url = "mqtt://b"\nqos = 2', "framehive.toml:3: mqtt.qos: must be 0 or 1"),
    ('url = "http://b"', "framehive.toml:2: mqtt.url: must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"),
    ('url = "mqtt://u:pw@b"', "framehive.toml:2: mqtt.url: put the user in `username`"),
    ('url = "mqtt://b"\nprefix = "a/+/b"', "framehive.toml:3: mqtt.prefix: must not contain '+'"),
    ('url = "mqtt://b"\ndiscovery_prefix = "/ha"', "framehive.toml:3: mqtt.discovery_prefix: must be topic levels"),
    ('url = "mqtt://b"\nnode_id = "Hall 1"', "framehive.toml:3: mqtt.node_id: must be lowercase"),
    ('url = "mqtt://b"\nretain = "yes"', "framehive.toml:3: mqtt.retain: must be true or false"),
    ('url = "mqtt://b"\nstats_interval_s = 0', "framehive.toml:3: mqtt.stats_interval_s: must be 1..3600"),
    ('url = "mqtt://b"\ncert_file = "c.pem"', "framehive.toml:3: mqtt.cert_file: cert_file and key_file go together"),
    ('url = "mqtt://b"\npassword_file = "pw"', "framehive.toml:3: mqtt.password_file: needs a username"),
    ('url = "mqtt://b"\npassword = "x"', "framehive.toml:3: mqtt.password: unknown key"),
])
def test_mqtt_table_mistakes_name_their_line(table, expect):
    with pytest.raises(ConfigError) as e:
        parse("[mqtt]\n" + table)
    assert str(e.value).startswith(expect), str(e.value)


def master(argv: list[str]):
    return from_flags(parse_args(argv), env={}, defaults=vars(parse_args([])))


def test_no_mqtt_unless_asked():
    assert master([]).mqtt is None


def test_flags_and_the_table_make_one_setting_and_the_password_stays_hidden(tmp_path):
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "ca.pem").write_text("-")
    cfg = tmp_path / "framehive.toml"
    cfg.write_text('[mqtt]\nurl = "mqtts://broker.lan"\nusername = "fh"\npassword_file = "pw"\nca_file = "ca.pem"\n'
                   'prefix = "home/fh"\ncommands = true\n')
    s = master(["--config", str(cfg), "--port", "8123", "--mqtt-prefix", "site"]).mqtt
    assert s.host == "broker.lan" and s.port == 8883 and s.tls and s.username == "fh" and s.password == "s3cret"
    assert s.ca_file == str(tmp_path / "ca.pem")  # relative to the config file
    assert s.prefix == "site" and s.commands  # the flag wins; the table fills in the rest
    assert s.node_id == "127_0_0_1_8123" and s.client_id == "framehive-127_0_0_1_8123"
    assert "s3cret" not in repr(s)
    s = master(["--config", str(cfg), "--mqtt", "mqtt://other:1999", "--no-mqtt-commands"]).mqtt
    assert (s.host, s.port, s.commands) == ("other", 1999, False)


def test_flags_alone(tmp_path):
    s = master(["--mqtt", "mqtt://127.0.0.1", "--mqtt-qos", "0", "--no-mqtt-retain", "--mqtt-node-id", "hall"]).mqtt
    assert (s.port, s.qos, s.retain, s.node_id, s.discovery) == (1883, 0, False, "hall", True)
    with pytest.raises(ConfigError, match="mqtt password_file .*cannot read it"):
        master(["--mqtt", "mqtt://b", "--mqtt-username", "u", "--mqtt-password-file", str(tmp_path / "none")])
    with pytest.raises(ConfigError, match="mqtt ca_file: no such file"):
        master(["--mqtt", "mqtts://b", "--mqtt-ca-file", str(tmp_path / "none")])
