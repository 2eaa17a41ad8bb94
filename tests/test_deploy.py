"""The deploy kit in deploy/ is checked without deploying anything: the systemd units with
`systemd-analyze verify` and against the CLI, the environment template against the
declared settings, compose.yaml against the structure we rely on, the proxies for the
X-Forwarded-For rule, the Dockerfile for a non-root multi-stage build, and the dev lock
file for every declared dependency."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from pipeline.config import SETTINGS
from tests.test_docs import check_command_line

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = sorted(DEPLOY.glob("*.service"))
INSTALLED_SYNDICATE = "/srv/syndicate/.venv/bin/syndicate"


def read_unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text(encoding="utf-8"))
    return parser


def test_there_is_a_unit_for_each_long_running_process():
    """serve (every confirm and unsubscribe link needs it), scheduler and workers."""
    runs = {u.name: shlex.split(read_unit(u)["Service"]["ExecStart"]) for u in UNITS}
    assert set(runs) == {"syndicate-serve.service", "syndicate-scheduler.service", "syndicate-worker@.service"}
    for name, argv in runs.items():
        assert name.removeprefix("syndicate-").split("@")[0].split(".")[0] in argv, (name, argv)


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_is_hardened_and_shares_the_environment_file(unit):
    service = read_unit(unit)["Service"]
    assert service["User"] == "syndicate" and service["Group"] == "syndicate"
    assert service["EnvironmentFile"] == "/etc/syndicate/env"
    for key, value in {
        "NoNewPrivileges": "true",
        "ProtectSystem": "strict",
        "PrivateTmp": "true",
        "ProtectHome": "true",
        "CapabilityBoundingSet": "",
        "Restart": "always",
    }.items():
        assert service.get(key) == value, f"{unit.name}: {key}={service.get(key)!r}, expected {value!r}"
    writable = service["ReadWritePaths"].split()
    assert "/srv/syndicate/var" in writable
    assert ("/srv/syndicate/public" in writable) == (unit.name == "syndicate-scheduler.service"), (
        "only the scheduler (the build stage) writes public/"
    )


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_runs_a_real_command(unit):
    exec_start = read_unit(unit)["Service"]["ExecStart"]
    assert exec_start.startswith(INSTALLED_SYNDICATE + " ")
    assert check_command_line("syndicate " + exec_start.removeprefix(INSTALLED_SYNDICATE + " ")) is None


def test_serve_listens_where_the_proxies_point():
    exec_start = shlex.split(read_unit(DEPLOY / "syndicate-serve.service")["Service"]["ExecStart"])
    upstream = f"{exec_start[exec_start.index('--host') + 1]}:{exec_start[exec_start.index('--port') + 1]}"
    assert upstream == "127.0.0.1:8000"
    assert f"reverse_proxy {upstream}" in (DEPLOY / "Caddyfile").read_text(encoding="utf-8")
    assert f"server {upstream};" in (DEPLOY / "nginx.conf").read_text(encoding="utf-8")


def test_proxies_overwrite_x_forwarded_for():
    """The web service trusts X-Forwarded-For from 127.0.0.1 for rate limits and the
    consent log (DOI-2, GDPR-1), so the proxy must replace what a client sent."""
    nginx = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    directives = [line.split("#")[0] for line in nginx.splitlines()]
    assert any(re.fullmatch(r"\s*proxy_set_header X-Forwarded-For \$remote_addr;\s*", d) for d in directives)
    assert not any("$proxy_add_x_forwarded_for" in d for d in directives)
    caddy = [line.split("#")[0].strip() for line in (DEPLOY / "Caddyfile").read_text(encoding="utf-8").splitlines()]
    assert "header_up X-Forwarded-For {remote_host}" in caddy


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None and not os.environ.get("CI"),
    reason="systemd-analyze is not installed (it is in CI: .ci/run installs systemd)",
)
def test_units_pass_systemd_analyze_verify(tmp_path):
    """Unknown keys and bad values are only warnings to systemd (exit status 0), so any
    output at all fails. The installed paths are pointed at this checkout's."""
    syndicate = ROOT / ".venv" / "bin" / "syndicate"
    if not syndicate.exists():
        syndicate = Path(shutil.which("syndicate") or "/nonexistent")
    env_file = tmp_path / "env"
    env_file.write_text((DEPLOY / "syndicate.env.example").read_text(encoding="utf-8"), encoding="utf-8")
    names = []
    for unit in UNITS:
        text = unit.read_text(encoding="utf-8").replace(INSTALLED_SYNDICATE, str(syndicate))
        text = text.replace("/etc/syndicate/env", str(env_file))
        name = unit.name.replace("@.service", "@1.service")
        (tmp_path / name).write_text(text, encoding="utf-8")
        if name != unit.name:
            (tmp_path / unit.name).write_text(text, encoding="utf-8")
        names.append(str(tmp_path / name))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "notice"},
    )
    output = "\n".join(
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "Failed to connect" not in line
    )
    assert result.returncode == 0 and not output, output


def test_environment_template_names_only_declared_settings():
    declared = {s.env_name for s in SETTINGS} | {"SYNDICATE_SECRET_KEY"}
    text = (DEPLOY / "syndicate.env.example").read_text(encoding="utf-8")
    names = re.findall(r"^#?(SYNDICATE_[A-Z0-9_]+)=", text, re.M)
    assert "SYNDICATE_SECRET_KEY" in names
    unknown = sorted(set(names) - declared)
    assert not unknown, f"deploy/syndicate.env.example sets variables no setting reads: {unknown}"
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*=\S*", line), f"systemd and compose both read only KEY=value: {line!r}"


COMPOSE_SCHEMA = {
    "type": "object",
    "required": ["services", "volumes"],
    "properties": {
        "services": {
            "type": "object",
            "required": ["db", "init", "serve", "scheduler", "worker"],
            "additionalProperties": {
                "type": "object",
                "anyOf": [{"required": ["image"]}, {"required": ["build"]}],
                "properties": {
                    "image": {"type": "string"},
                    "command": {"type": "array", "items": {"type": "string"}},
                    "environment": {"type": "object", "additionalProperties": {"type": "string"}},
                    "env_file": {"type": "array", "items": {"type": "string"}},
                    "volumes": {"type": "array", "items": {"type": "string", "pattern": "^[^:]+:/[^:]+(:ro)?$"}},
                    "ports": {"type": "array", "items": {"type": "string", "pattern": r"^127\.0\.0\.1:\d+:\d+$"}},
                    "depends_on": {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "required": ["condition"],
                            "properties": {
                                "condition": {
                                    "enum": ["service_started", "service_healthy", "service_completed_successfully"]
                                }
                            },
                        },
                    },
                    "restart": {"enum": ["no", "always", "on-failure", "unless-stopped"]},
                    "healthcheck": {"type": "object", "required": ["test"]},
                },
            },
        },
        "volumes": {"type": "object"},
    },
}


def load_compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_compose_file_has_the_structure_we_rely_on():
    compose = load_compose()
    jsonschema.validate(compose, COMPOSE_SCHEMA)
    services = compose["services"]
    assert services["db"]["image"].startswith("postgres:")
    for name in ("init", "serve", "scheduler", "worker"):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert service["env_file"] == ["syndicate.env"]
        assert service["environment"]["SYNDICATE_DATABASE__URL"].startswith("postgresql+psycopg://")
        assert check_command_line("syndicate " + shlex.join(service["command"])) is None, service["command"]
        assert service["depends_on"]["db"]["condition"] == "service_healthy"
        for volume in service["volumes"]:
            assert volume.split(":")[0] in compose["volumes"], volume
    for name in ("serve", "scheduler", "worker"):
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert [c for c in services["init"]["command"]] == ["init"]
    assert services["serve"]["ports"] == ["127.0.0.1:8000:8000"], "only the host's TLS proxy may reach serve"


def test_dockerfile_is_multi_stage_slim_and_not_root():
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2 and all("-slim" in s for s in stages)
    final = lines[lines.index(stages[-1]) :]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    entry = next(line for line in final if line.startswith("ENTRYPOINT "))
    cmd = next(line for line in final if line.startswith("CMD "))
    argv = yaml.safe_load(entry.removeprefix("ENTRYPOINT ")) + yaml.safe_load(cmd.removeprefix("CMD "))
    assert argv[0] == "syndicate" and check_command_line(shlex.join(argv)) is None
    copied = [line.split()[1] for line in lines if line.startswith("COPY ") and "--from" not in line]
    missing = [src for src in copied if not (ROOT / src).exists()]
    assert not missing, f"the Dockerfile copies what the repository does not have: {missing}"


def test_dev_lock_pins_every_declared_dependency():
    """`make lock` after changing pyproject.toml: the install step reads the lock first."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    lock = (ROOT / "requirements" / "dev.lock").read_text(encoding="utf-8")
    pinned = {
        re.sub(r"[-_.]+", "-", re.split(r"[=<>; ]", line, maxsplit=1)[0].lower())
        for line in lock.splitlines()
        if line and not line.startswith((" ", "#"))
    }

    def normal(requirement: str) -> str:
        # PEP 503 names: flufl.bounce is pinned as flufl-bounce
        return re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower())

    missing = sorted({normal(r) for r in declared} - pinned)
    assert not missing, f"requirements/dev.lock lacks {missing}: run `make lock`"
