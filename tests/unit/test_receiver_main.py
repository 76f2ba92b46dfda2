"""The receiver's command line: ports (or none), default names that do not collide, quiet idle logs."""

from __future__ import annotations

import logging
import socket

import pytest

from common.errors import ConfigError
from master.core.service import MasterService
from receiver.__main__ import from_flags, log_counters, parse_args, parse_ports


def config_of(*argv: str):
    return from_flags(parse_args(list(argv)))


def test_ports_none_is_a_receiver_without_udp_cameras():
    assert parse_ports("none") == []
    config = config_of("--ports", "none", "--jobs-port", "9000")
    assert config.ports == () and config.jobs is not None and config.jobs.port == 9000


def test_ports_none_with_nothing_else_to_serve_is_refused():
    with pytest.raises(ConfigError, match="nothing to serve"):
        config_of("--ports", "none")


def test_default_names_differ_by_ports_on_one_host():
    host = socket.gethostname()
    a = config_of("--ports", "5000-5003").display_name
    b = config_of("--ports", "6000,6001").display_name
    jobs = config_of("--ports", "none", "--jobs-port", "9000").display_name
    assert a == f"receiver@{host}:5000-5003" and b == f"receiver@{host}:6000,6001"
    assert jobs == f"receiver@{host}:jobs9000"


def test_two_live_receivers_under_one_name_are_told_apart_and_counted(caplog):
    now = [1000.0]
    service = MasterService(clock=lambda: now[0])
    service.report_source("rx", {"instance": "aaaa", "ports": {}})
    now[0] += 1
    with caplog.at_level(logging.WARNING):
        service.report_source("rx", {"instance": "bbbb", "ports": {}})
    assert "two receivers report as 'rx'" in caplog.text
    assert service._sources_snapshot(now[0])["rx"]["name_clashes"] == 1


def test_a_restarted_receiver_is_not_a_clash():
    now = [1000.0]
    service = MasterService(clock=lambda: now[0])
    service.report_source("rx", {"instance": "aaaa", "ports": {}})
    now[0] += 30  # the old instance went quiet long ago: this is its successor
    service.report_source("rx", {"instance": "bbbb", "ports": {}})
    assert service._sources_snapshot(now[0])["rx"]["name_clashes"] == 0


class Counting:
    """The one thing log_counters reads from a forwarder."""

    def __init__(self, counters: dict[str, dict[str, int]]) -> None:
        self._counters = counters

    def counters(self) -> dict[str, dict[str, int]]:
        return self._counters


def test_an_idle_port_logs_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="receiver"):
        log_counters(Counting({"5000": {"forwarded": 0}, "5001": {"forwarded": 7, "refused": 0}}))
    assert [r.getMessage() for r in caplog.records] == ["port 5001: forwarded=7"]


def test_ingest_core_and_threads_come_from_flags_else_the_environment(monkeypatch):
    monkeypatch.delenv("FRAMEHIVE_INGEST_CORE", raising=False)
    assert (config_of().ingest_core, config_of().ingest_threads) == ("auto", 1)
    monkeypatch.setenv("FRAMEHIVE_INGEST_CORE", "python")
    assert config_of().ingest_core == "python"
    config = config_of("--ingest-core", "compiled", "--ingest-threads", "2")
    assert (config.ingest_core, config.ingest_threads) == ("compiled", 2)
    monkeypatch.setenv("FRAMEHIVE_INGEST_CORE", "fast")
    with pytest.raises(ConfigError, match="--ingest-core must be one of auto, compiled, python"):
        config_of()
    with pytest.raises(ConfigError, match="--ingest-threads must be 1..16"):
        config_of("--ingest-core", "auto", "--ingest-threads", "0")
