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
