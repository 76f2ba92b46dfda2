"""docker/: no Docker engine runs here, so the compose file is checked statically, and every
command in it is parsed by the real command-line parsers of our modules and of Celery."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.local import ROOT

COMPOSE = ROOT / "docker" / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
WORKER_CMD = "celery -A worker.celery_app worker -Q frames,tiles"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_the_compose_file_has_every_role_with_a_healthcheck(compose):
    services = compose["services"]
    assert set(services) == {"redis", "master", "receiver", "worker"}
    for name, svc in services.items():
        check = svc.get("healthcheck", {})
        assert check.get("test") and check.get("interval") and check.get("retries"), f"{name} has no healthcheck"
        assert svc.get("restart") == "unless-stopped", name
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert services["master"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["receiver"]["depends_on"]["master"]["condition"] == "service_healthy"


def test_redis_is_private_password_protected_and_never_evicts(compose):
    redis = compose["services"]["redis"]
    assert "ports" not in redis, "Redis must not be published: whoever reaches it can queue work"
    cmd = redis["command"]
    assert cmd[cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert "--requirepass" in cmd and cmd[cmd.index("--requirepass") + 1].startswith("${REDIS_PASSWORD:?")
    env = compose["services"]["master"]["environment"]
    assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD:\?[^}]*\}@redis:6379/0", env["FRAMEHIVE_REDIS"])


def test_tcp_ports_are_published_on_the_host_loopback_only(compose):
    for name in ("master", "receiver"):
        for mapping in compose["services"][name].get("ports", []):
            if not mapping.endswith("/udp"):
                assert mapping.startswith("127.0.0.1:"), (name, mapping)


def _module_args(cmd: list[str], module: str) -> list[str]:
    assert cmd[:3] == ["python", "-m", module], cmd
    return cmd[3:]


def test_master_and_receiver_commands_parse_with_our_own_parsers(compose, monkeypatch):
    from master.__main__ import parse_args as master_args
    from receiver.__main__ import parse_args as receiver_args

    env = compose["x-framehive"]["environment"]
    assert env["FRAMEHIVE_TOKEN"].startswith("${FRAMEHIVE_TOKEN:?"), "the master must require a token"
    monkeypatch.setenv("FRAMEHIVE_TOKEN", "compose-test-token-0123456789")
    m = master_args(_module_args(compose["services"]["master"]["command"], "master"))
    assert not m.insecure and not m.token_file, "the token comes from $FRAMEHIVE_TOKEN, which compose requires"
    assert (m.backend, m.host, m.port) == ("celery", "0.0.0.0", 8000)
    assert (ROOT / m.rules.removeprefix("/app/")).is_file(), "the rules file must be in the image"
    r = receiver_args(_module_args(compose["services"]["receiver"]["command"], "receiver"))
    assert r.master == "http://master:8000" and r.jobs_port == 9090
    check = " ".join(compose["services"]["receiver"]["healthcheck"]["test"])
    assert f":{r.jobs_http_port}/" in check, "the receiver's healthcheck must ask its preview port"
    assert "/healthz" in " ".join(compose["services"]["master"]["healthcheck"]["test"])


def test_worker_command_is_the_documented_one_and_celery_accepts_it(compose):
    cmd = compose["services"]["worker"]["command"]
    assert " ".join(cmd).startswith(WORKER_CMD)
    assert WORKER_CMD in (ROOT / "docs" / "OPERATIONS.md").read_text()
    celery = Path(sys.executable).with_name("celery")
    ok = subprocess.run([str(celery), *cmd[1:], "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([str(celery), *cmd[1:], "--no-such-flag", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0, "celery must refuse an unknown option (else this check proves nothing)"


def test_the_dockerfile_copies_what_exists_and_installs_the_pinned_requirements():
    text = DOCKERFILE.read_text()
    assert text.startswith("#") and "FROM python:3.11" in text
    for line in text.splitlines():
        if line.startswith("COPY "):
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which is not in the repository"
    assert "pip install -r requirements.txt" in text and "--no-deps -r requirements-nodeps.txt" in text
    assert "\nUSER " in text, "the roles must not run as root in the container"
    # what `make setup` does beyond pip: the compiled datagram core, and the detector's model in the image
    assert "python scripts/build_datagram_core.py --strict" in text and "python -m worker.models" in text
    assert "FRAMEHIVE_MODEL_DIR=" in text, "the model must live where the unprivileged user reads it"
