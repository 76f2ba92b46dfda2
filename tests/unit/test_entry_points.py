"""Every console script names a main that exists, and every role's module runs with -m."""

from __future__ import annotations

import importlib
import tomllib

from cluster.local import ROOT


def test_every_console_script_names_a_callable_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"framehive-master", "framehive-receiver", "framehive-jobs", "framehive-worker", "framehive-status",
            "framehive-results"} <= set(scripts)
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


def test_the_systemd_units_run_console_scripts_with_flags_their_parsers_take():
    import shlex

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    units = sorted((ROOT / "examples" / "systemd").glob("*.service"))
    assert len(units) == 4
    for unit in units:
        line = next(x for x in unit.read_text().splitlines() if x.startswith("ExecStart="))
        argv = shlex.split(line.removeprefix("ExecStart=").replace("${FRAMEHIVE_MASTER}", "http://hub:8000")
                           .replace("%i", "cam1").replace("%H", "host"))
        module, _, _ = scripts[argv[0].rsplit("/", 1)[1]].partition(":")
        parse = importlib.import_module(module).parse_args
        args = parse(argv[1:])
        assert getattr(args, "master", "") == "http://hub:8000" or getattr(args, "config", ""), unit.name
