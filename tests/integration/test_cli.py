"""The command lines as a user meets them: --help, bad flags, unsafe binds, a clean stop on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from cluster.local import ROOT, free_port, free_udp_ports
from common.masterclient import wait_for_master


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("module", ["master", "receiver", "worker", "sender", "master.cli.results", "cluster.demo"])
def test_help(module):
    out = run(module, "--help")
    assert out.returncode == 0 and "usage:" in out.stdout


@pytest.mark.parametrize("args,words", [
    (("master", "--port", "70000"), "port must be 0..65535"),
    (("master", "--host", "0.0.0.0"), "refusing to bind 0.0.0.0"),
    (("master", "--lease-s", "0"), "lease_s must be > 0"),
    (("receiver", "--ports", "5000-4000"), "bad port range"),
    (("receiver", "--ports", "abc"), "bad port 'abc'"),
    (("receiver", "--pipeline", "dog"), "unknown stage 'dog'"),
    (("receiver", "--ports", "5000", "--pipeline", "5001=face"), "not in --ports"),
    (("receiver", "--host", "::"), "refusing to listen on ::"),
    (("receiver", "--master", "ftp://x"), "master URL must look like"),
    (("worker", "--batch", "0"), "batch must be 1..256"),
    (("worker", "--preload", "nope"), "unknown stage 'nope'"),
    (("sender", "--receiver", "nohostport"), "expected HOST:PORT"),
    (("sender", "--quality", "0"), "--quality must be 1..100"),
    (("sender", "--source", "/no/such/file.mp4"), "no such video file"),
    (("sender", "--source", "synthetic:10x"), "synthetic size"),
    (("master.cli.results",), "--port"),
])
def test_bad_flags_are_refused_with_a_message(args, words):
    out = run(*args)
    assert out.returncode != 0 and words in out.stderr, out.stderr


def test_master_and_receiver_stop_cleanly_on_sigterm():
    port = free_port()
    master = subprocess.Popen([sys.executable, "-m", "master", "--port", str(port)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    receiver = subprocess.Popen([sys.executable, "-m", "receiver", "--ports", ",".join(map(str, free_udp_ports(2))),
                                 "--master", f"http://127.0.0.1:{port}"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for_master(f"http://127.0.0.1:{port}", 15)
        time.sleep(1.0)
        for proc in (receiver, master):
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=15)
            assert proc.returncode == 0 and "stopped" in out, out
    finally:
        for proc in (receiver, master):
            if proc.poll() is None:
                proc.kill()


def test_a_receiver_with_its_job_server_and_preview_exits_0_on_one_sigterm(tmp_path):
    """Both used to be started twice: the second preview thread blocked in accept() for ever."""
    import signal
    import time

    from cluster.local import LocalCluster, free_port, free_udp_ports, wait_for_log

    with LocalCluster(log_dir=tmp_path / "logs") as c:
        c.start_master()
        rx = c.start_receiver(free_udp_ports(1), "--jobs-port", str(free_port()), "--jobs-http-port",
                              str(free_port()))
        wait_for_log(rx, "preview at http", 15)
        started = time.monotonic()
        rx.popen.send_signal(signal.SIGTERM)
        assert rx.popen.wait(15) == 0, rx.log_text()[-2000:]
        assert time.monotonic() - started < 10
        assert "address already in use" not in rx.log_text().lower()


def test_the_cluster_stops_every_process_it_started_whatever_its_name(tmp_path):
    from cluster.local import LocalCluster, wait_for_log

    with LocalCluster(log_dir=tmp_path / "logs") as c:
        c.start_master()
        odd = c.spawn("edge", "receiver", "--ports", str(free_udp_ports(1)[0]), "--master", c.master_url,
                      "--name", "edge")
        stray = c.spawn("intruder", "worker", "--master", c.master_url, "--name", "intruder")
        for p in (odd, stray):  # running (a SIGTERM while Python still imports ends it by the signal)
            wait_for_log(p, "starting", 30)
    assert not odd.alive() and not stray.alive()
