"""docker-compose.yml cannot run here (no Docker engine), so check it agrees with the local stack."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from adplatform.config import load_config
from devstack.stack import KAFKA_PORT, PG_PORT, REDIS_PERSISTENCE, REDIS_PORT

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_ports_match_the_local_stack_and_config_defaults() -> None:
    services = _compose()["services"]
    published = {name: [p.split(":")[0] for p in svc.get("ports", [])] for name, svc in services.items()}
    assert published["postgres"] == [str(PG_PORT)]
    assert published["redis"] == [str(REDIS_PORT)]
    assert published["kafka"] == [str(KAFKA_PORT)]
    config = load_config({}, dotenv=ROOT / "does-not-exist")
    assert config.pg_dsn.endswith(f":{PG_PORT}/adplatform")
    assert config.redis_url.startswith(f"redis://127.0.0.1:{REDIS_PORT}/")
    assert config.kafka_bootstrap == f"127.0.0.1:{KAFKA_PORT}"
    assert (
        f"EXTERNAL://127.0.0.1:{KAFKA_PORT}" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    )


def test_compose_redis_persists_as_the_local_stack_does() -> None:
    assert _compose()["services"]["redis"]["command"] == ["redis-server", *REDIS_PERSISTENCE]


def test_compose_platform_services_run_commands_of_the_cli() -> None:
    from click.testing import CliRunner

    from adplatform.cli import main

    services = _compose()["services"]
    for name, svc in services.items():
        command = svc.get("command")
        if isinstance(command, list) and command and command[0] == "adplatform":
            sub = command[1]
            result = CliRunner().invoke(main, [sub, "--help"])
            assert result.exit_code == 0, f"{name}: `adplatform {sub}` is not a command"


def test_compose_config_validates_when_the_plugin_exists() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        # The compose plugin is not on this machine: the YAML checks above are what we can do here.
        return
    result = subprocess.run([docker, "compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
