"""Every role, started with its heavier flags, exits 0 within seconds of one SIGTERM."""

from __future__ import annotations

import signal
import time

from cluster.local import ROOT, LocalCluster, Proc, free_port, free_udp_ports, wait_for_log
from cluster.redisserver import RedisServer
from tests.conftest import wait_until

STOP_WITHIN_S = 10.0  # the promise is 5 s on an idle machine; the margin is for a loaded one


def test_every_role_with_its_heavier_flags_exits_0_on_one_sigterm(tmp_path):
    with RedisServer() as redis, LocalCluster(log_dir=tmp_path / "logs") as c:
        c.start_master("--state-dir", str(tmp_path / "state"), "--rules", str(ROOT / "examples" / "rules.toml"))
        celery_port = free_port()
        celery_master = c.spawn("master-celery", "master", "--port", str(celery_port), "--backend", "celery",
                                "--redis", redis.url)
        wait_for_log(celery_master, "master listening", 30)
        [udp] = free_udp_ports(1)
        receiver = c.start_receiver([udp], "--zmq-port", str(free_port()), "--jobs-port", str(free_port()),
                                    "--jobs-http-port", str(free_port()), "--detect", "motion")
        jobs_only = c.spawn("jobs-only", "receiver.jobs", "--port", str(free_port()), "--master", c.master_url)
        zmq_only = c.spawn("zmq-only", "receiver", "--ports", "none", "--zmq-port", str(free_port()),
                           "--master", c.master_url)
        workers = c.start_workers(1, "--preload", "person", "--processes", "2", "--batch", "2")
        celery_workers = c.start_celery_workers(1, redis.url)
        publisher = c.start_publisher(udp, "synthetic", "--fps", "10")
        wait_for_log(jobs_only, "serving file jobs", 15)
        wait_for_log(zmq_only, "receiving no UDP, imagezmq on", 15)
        with c.client() as client:  # frames flow end to end before anything is stopped
            wait_until(lambda: client.get_results(udp, 0)["next"] >= 3, 60)
        roles = [publisher, receiver, jobs_only, zmq_only, *workers, *celery_workers, celery_master]
        for p in roles:
            p.popen.send_signal(signal.SIGTERM)
        for p in roles:
            assert_exits_0(p)
        master = next(p for p in c.procs if p.name == "master")
        master.popen.send_signal(signal.SIGTERM)
        assert_exits_0(master)


def assert_exits_0(p: Proc) -> None:
    started = time.monotonic()
    code = p.popen.wait(STOP_WITHIN_S + 20)
    took = time.monotonic() - started
    assert code == 0 and took < STOP_WITHIN_S, f"{p.name}: exit {code} after {took:.1f}s\n{p.log_text()[-3000:]}"


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler installed (the SigCgt mask of /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            mask = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(mask & (1 << (signal.SIGTERM - 1)))


def test_a_role_told_to_stop_while_it_is_still_starting_exits_0(tmp_path):
    """The first thing each role imports installs a SIGTERM handler (common/early.py): one SIGTERM
    while OpenCV or onnxruntime is still loading exits 0 (it was -15), as it does later."""
    with LocalCluster(log_dir=tmp_path / "logs") as c:
        master_port = free_port()
        [udp] = free_udp_ports(1)
        roles = [c.spawn("master", "master", "--port", str(master_port)),
                 c.spawn("receiver", "receiver", "--ports", str(udp), "--master", f"http://127.0.0.1:{master_port}"),
                 c.spawn("worker", "worker", "--master", f"http://127.0.0.1:{master_port}", "--preload", "person"),
                 c.spawn("publisher", "sender", "--receiver", f"127.0.0.1:{udp}")]
        for p in roles:
            wait_until(lambda p=p: _catches_sigterm(p.popen.pid) or p.popen.poll() is not None, 30)
            p.popen.send_signal(signal.SIGTERM)
        for p in roles:
            assert_exits_0(p)


def test_the_early_handler_exits_0_and_only_in_a_roles_own_process():
    import subprocess
    import sys

    code = ("import sys, os, signal, time; sys.argv[0] = {main!r}; import common.early; "
            "os.kill(os.getpid(), signal.SIGTERM); time.sleep(10); sys.exit(3)")
    for main, want in ((str(ROOT / "worker" / "__main__.py"), 0), (str(ROOT / "tests" / "__main__.py"), -15)):
        r = subprocess.run([sys.executable, "-c", code.format(main=main)], cwd=ROOT, timeout=30)
        assert r.returncode == want, (main, r.returncode)
