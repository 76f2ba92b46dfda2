"""The receiver's command line: ports (or none), default names that do not collide, quiet idle logs."""

from __future__ import annotations

import logging
import socket

import pytest

from master.service import MasterService
from receiver.__main__ import default_name, log_counters, parse_args, parse_ports


def test_ports_none_is_a_receiver_without_udp_cameras():
    assert parse_ports("none") == []
    args = parse_args(["--ports", "none", "--jobs-port", "9000"])
    assert args.port_list == [] and args.jobs_port == 9000


def test_ports_none_with_nothing_else_to_serve_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--ports", "none"])
    assert "nothing to serve" in capsys.readouterr().err


def test_default_names_differ_by_ports_on_one_host():
    host = socket.gethostname()
    a = default_name(parse_args(["--ports", "5000-5003"]))
    b = default_name(parse_args(["--ports", "6000,6001"]))
    jobs = default_name(parse_args(["--ports", "none", "--jobs-port", "9000"]))
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
