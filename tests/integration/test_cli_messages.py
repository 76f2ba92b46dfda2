"""The user tools as a user meets them: --help that says every flag once and truly, and one-line
errors with exit code 2 instead of tracebacks."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import xmlrpc.client

import pytest

from cluster.local import ROOT
from tests.conftest import RunningMaster, wait_until

TOOLS = ["master", "receiver", "worker", "sender", "sender.client", "master.cli.status", "master.cli.results",
         "worker.models", "cluster.demo"]
EMPTY_DEFAULTS = ("(default: None)", "(default: [])", "(default: )", "(default: False)")


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={"COLUMNS": "100", "PATH": ""})


def option_helps(text: str) -> dict[str, str]:
    """Each argument's invocation (e.g. '--port PORT') -> its help text, from argparse's --help output."""
    helps: dict[str, list[str]] = {}
    current, in_args = None, False
    for line in text.splitlines():
        if re.fullmatch(r"(options|optional arguments|positional arguments):", line):
            in_args, current = True, None
        elif not line.startswith(" "):  # a blank line, the description: the section is over
            in_args, current = False, None
        elif in_args and re.match(r"  \S", line):
            current, *rest = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            helps[current] = rest
        elif in_args and current is not None:
            helps[current].append(line.strip())
    return {k: " ".join(v) for k, v in helps.items()}


def test_the_help_parser_sees_a_flag_without_help():
    text = ("usage: x\n\noptions:\n  -h, --help   show this\n  --port PORT\n"
            "  --host HOST  where\n                 it is\n")
    assert option_helps(text) == {"-h, --help": "show this", "--port PORT": "", "--host HOST": "where it is"}


@pytest.mark.parametrize("tool", TOOLS)
def test_every_flag_has_help_and_one_true_default(tool):
    out = run(tool, "--help")
    assert out.returncode == 0, out.stderr
    helps = option_helps(out.stdout)
    assert len(helps) >= 3, out.stdout
    for flag, text in helps.items():
        assert text, f"{tool}: {flag} has no help"
        assert not any(empty in text for empty in EMPTY_DEFAULTS), f"{tool}: {flag}: {text}"
        assert len(re.findall(r"\bdefault\b", text, re.IGNORECASE)) <= 1, f"{tool}: {flag} says two defaults: {text}"


def test_the_file_job_client_shows_its_defaults_and_needs_no_filters():
    helps = option_helps(run("sender.client", "--help").stdout)
    assert "(default: 9090)" in helps["--port PORT"] and "(default: 1x1)" in helps["--tiles TILES"]
    assert "(default: copy)" in helps["--filters FILTERS"]
    usage = run("sender.client", "--video", "/no/such.mp4", "--out", "/tmp/x.mp4")
    assert usage.returncode == 2 and "required" not in usage.stderr and "no such file" in usage.stderr


@pytest.mark.parametrize("args,words", [
    (("sender", "--receiver", "nosuchhost.invalid:5000", "--max-frames", "1"),
     "cannot resolve the receiver's host 'nosuchhost.invalid'"),
    (("master.cli.status", "--master", "not-a-url"), "master URL must look like http://HOST:PORT, got 'not-a-url'"),
    (("master.cli.status", "--master", "http://127.0.0.1:99999"), "bad port in master URL"),
    (("master.cli.results", "--master", "127.0.0.1:8000", "--port", "5000"), "master URL must look like"),
    (("master.cli.results", "--port", "0"), "--port must be a camera port 1..65535"),
    (("worker", "--master", "not-a-url"), "master URL must look like http://HOST:PORT"),
    (("receiver", "--master", "http://127.0.0.1:0"), "bad port in master URL"),
    (("receiver", "--master", "http://bad host:8000"), "master URL must look like"),
])
def test_bad_input_is_a_one_line_error_with_exit_code_2(args, words):
    out = run(*args)
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    assert [line for line in out.stderr.splitlines() if words in line], out.stderr


def test_results_for_a_camera_the_master_does_not_have_names_the_known_ones(master):
    p = xmlrpc.client.ServerProxy(f"{master.url}/RPC2")
    for port in (5000, 5002):
        p.add_tasks([{"port": port, "seq": 0, "pipeline": "noop", "captured_ns": "1",
                      "payload": xmlrpc.client.Binary(b"\xff\xd8x")}])
    out = run("master.cli.results", "--master", master.url, "--port", "5001")
    assert out.returncode == 2 and out.stdout == ""
    assert "the master has no camera 5001; known cameras: 5000, 5002" in out.stderr, out.stderr
    assert run("master.cli.results", "--master", master.url, "--port", "5000").returncode == 0


def test_status_watch_waits_for_a_restarting_master():
    first = RunningMaster().start()
    proc = subprocess.Popen([sys.executable, "-m", "master.cli.status", "--master", first.url, "--watch",
                             "--interval", "0.1"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")))
    reader.start()
    try:
        first.stop()
        wait_until(lambda: any("waiting for the master" in line for line in lines), 30)
        assert proc.poll() is None, lines
        second = RunningMaster(port=first.port).start()
        try:
            wait_until(lambda: any("answers again" in line for line in lines), 30)
            assert proc.poll() is None, lines
        finally:
            second.stop()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
