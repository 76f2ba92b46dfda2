"""The user tools as a user meets them: --help that says every flag once and truly, and one-line
errors with exit code 2 instead of tracebacks."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from cluster.local import ROOT

TOOLS = ["sender", "sender.client", "master.status", "master.results", "worker.models", "cluster.demo"]
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
