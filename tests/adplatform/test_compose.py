"""docker-compose.yml cannot run here (no Docker engine), so check it agrees with the local stack."""

from __future__ import annotations

import hashlib
import http.server
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from admin.settings import load_admin_config
from adplatform.config import DEFAULT_METRICS_PORTS, load_config
from adplatform.services import ADSERVER_PORT, PLATFORM_SERVICES
from devstack.stack import KAFKA_PORT, PG_PORT, REDIS_DIAGNOSTICS, REDIS_PERSISTENCE, REDIS_PORT

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
    command = ["redis-server", *REDIS_PERSISTENCE, *REDIS_DIAGNOSTICS]
    assert _compose()["services"]["redis"]["command"] == command


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


# --- Every platform service, started after `init`, restarted, from the right image (issue 17, item 6) ---

STACK_SERVICES = frozenset({"postgres", "redis", "kafka"})
SCHEMA_DIR = ROOT / "tests" / "data" / "compose-spec"
# The vendored schema's digest (tests/data/compose-spec/README.md): an edited copy would validate nothing.
SCHEMA_SHA256 = "56bab44c85c0ce8affb74474950293f37d510673283a243bcd7eeadb900fa35c"
# The top-level project name, added to the specification after the vendored snapshot; as it defines it now.
SCHEMA_NAME_PROPERTY = {
    "type": "string",
    "description": "define the Compose project name, until user defines one explicitly.",
}
RESTART_POLICIES = frozenset({"unless-stopped", "on-failure", "always"})


def _platform_services() -> dict[str, dict[str, Any]]:
    services = _compose()["services"]
    return {name: svc for name, svc in services.items() if name not in STACK_SERVICES | {"init"}}


def _compose_validator() -> jsonschema.Draft201909Validator:
    """The vendored schema plus the top-level ``name``; its ``$schema`` names draft 2019-09 by a
    non-canonical URI, so that draft's validator is picked by hand."""
    spec = json.loads((SCHEMA_DIR / "compose-spec.json").read_bytes())
    schema = {**spec, "properties": {**spec["properties"], "name": SCHEMA_NAME_PROPERTY}}
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def test_compose_validates_against_the_compose_specification_schema() -> None:
    raw = (SCHEMA_DIR / "compose-spec.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256, "the vendored schema was edited"
    errors = sorted(_compose_validator().iter_errors(_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_compose_schema_check_catches_a_misspelt_key() -> None:
    broken = _compose()
    broken["services"]["manager"]["restart_policy"] = "always"  # the key is `restart`
    assert not _compose_validator().is_valid(broken)


def test_compose_runs_exactly_the_platform_services_with_their_commands() -> None:
    compose = _platform_services()
    assert sorted(compose) == sorted(s.name for s in PLATFORM_SERVICES)
    for svc in PLATFORM_SERVICES:
        assert compose[svc.name]["command"] == list(svc.command(container=True)), svc.name


def test_platform_service_commands_parse_with_the_cli() -> None:
    import click

    from adplatform.cli import main

    for svc in PLATFORM_SERVICES:
        # Resolve the (sub)command, then parse and convert its options without running it: an unknown
        # option or a bad value raises here.
        args = list(svc.command(container=True)[1:])
        command: click.Command = main
        parent = None
        while isinstance(command, click.Group):
            parent = click.Context(command, info_name=command.name, parent=parent)
            name = args.pop(0)
            sub = command.get_command(parent, name)
            assert sub is not None, f"{svc.name}: `{name}` is not a command"
            command = sub
        with command.make_context(command.name, args, parent=parent):
            pass


def test_every_platform_service_waits_for_init_and_restarts() -> None:
    services = _compose()["services"]
    init = services["init"]
    assert init["command"] == ["sh", "-c", "adplatform migrate && adplatform topics"]
    assert init.get("restart") == "no"  # one-shot: a restarted init would never count as completed
    assert {name: dep["condition"] for name, dep in init["depends_on"].items()} == dict.fromkeys(
        STACK_SERVICES, "service_healthy"
    )
    for name, svc in _platform_services().items():
        depends = {dep: cond["condition"] for dep, cond in svc.get("depends_on", {}).items()}
        assert depends.get("init") == "service_completed_successfully", name
        assert all(depends.get(stack) == "service_healthy" for stack in STACK_SERVICES), name
        assert svc.get("restart") in RESTART_POLICIES, name


def test_platform_services_run_from_the_image_their_extra_needs() -> None:
    compose = _platform_services()
    images: dict[str, str] = {}
    for svc in PLATFORM_SERVICES:
        build = compose[svc.name]["build"]
        target = "archive" if svc.extra == "archive" else "server"
        assert svc.extra in (None, "archive"), f"{svc.name}: no image installs the extra {svc.extra}"
        assert build == {"context": ".", "target": target}, svc.name
        # One tag per target: two targets under one tag would overwrite each other's image.
        assert images.setdefault(target, compose[svc.name]["image"]) == compose[svc.name]["image"], svc.name
    assert len(set(images.values())) == len(images)
    assert _compose()["services"]["init"]["build"]["target"] == "server"


def test_archive_job_writes_to_a_named_volume_at_its_archive_dir() -> None:
    compose = _compose()
    archive = compose["services"]["archive"]
    archive_dir = archive["environment"]["ADP_ARCHIVE_DIR"]
    assert archive_dir == _stage_env(_dockerfile_stages()["archive"])["ADP_ARCHIVE_DIR"]
    mounts = [v.split(":") for v in archive["volumes"]]
    assert [volume for volume, target in mounts if target == archive_dir] == ["archive"]
    assert "archive" in compose["volumes"]


def test_adserver_healthcheck_asks_readyz_with_the_image_python() -> None:
    adserver = _compose()["services"]["adserver"]
    assert adserver["ports"] == [f"{ADSERVER_PORT}:{ADSERVER_PORT}"]
    test = adserver["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]  # python is what the image surely has (no curl in -slim)
    code = test[3]
    assert f"http://127.0.0.1:{ADSERVER_PORT}/readyz" in code

    status = {"code": 503}

    class Ready(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"] if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        probe = code.replace(f":{ADSERVER_PORT}/", f":{server.server_address[1]}/")
        outcomes = []
        for status["code"] in (503, 200):
            outcomes.append(subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode)
    finally:
        server.shutdown()
        server.server_close()
    assert outcomes[0] != 0 and outcomes[1] == 0, outcomes


# --- The Dockerfile: the two images, both unprivileged ---


def _dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name → its instructions (keyword, arguments), line continuations joined; a stage built
    ``FROM`` another starts with a ``FROM`` naming it."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            parts = args.split()
            current = []
            stages[parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else parts[0]] = current
        current.append((keyword.upper(), args.strip()))
    return stages


def _stage_chain(name: str) -> list[list[tuple[str, str]]]:
    """The stage and its parents, base first (a stage sees its parents' USER and ENV)."""
    stages = _dockerfile_stages()
    chain: list[list[tuple[str, str]]] = []
    while name in stages:
        chain.insert(0, stages[name])
        name = stages[name][0][1].split()[0]
    return chain


def _effective_user(name: str) -> str:
    users = [args for stage in _stage_chain(name) for keyword, args in stage if keyword == "USER"]
    return users[-1] if users else "root"


def _stage_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for pair in args.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def test_both_images_run_as_a_non_root_user() -> None:
    stages = _dockerfile_stages()
    assert list(stages)[-1] == "server", "`docker build .` must give the server image"
    for image in ("server", "archive"):
        user = _effective_user(image)
        assert user.split(":")[0] not in ("root", "0"), f"{image} runs as {user}"
        created = [
            args
            for stage in _stage_chain(image)
            for keyword, args in stage
            if keyword == "RUN" and "useradd" in args
        ]
        assert any(args.rstrip().endswith(f" {user}") or f" {user} " in args for args in created), image
        # USER must come after the installs: pip and apt need root, the process must not have it.
        instructions = stages[image]
        last_user = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "USER")
        assert all(keyword != "RUN" for keyword, _ in instructions[last_user:]), image


def test_server_image_has_no_spark_and_the_archive_image_has_java() -> None:
    stages = _dockerfile_stages()
    server_runs = " ".join(args for stage in _stage_chain("server") for kw, args in stage if kw == "RUN")
    archive_runs = " ".join(args for stage in _stage_chain("archive") for kw, args in stage if kw == "RUN")
    assert "pip install --no-cache-dir -c constraints.txt ." in server_runs
    assert "[" not in server_runs.split("pip install", 1)[1], "the server image installs an extra"
    assert "jre" not in server_runs
    assert "'.[archive]'" in archive_runs and "default-jre-headless" in archive_runs
    # archive run needs the Kafka connector under ADP_STACK_DIR/jars/spark (archive.session.spark_jars).
    assert "ADP_STACK_DIR" in _stage_env(stages["archive"]) and "spark-sql-kafka-0-10" in archive_runs


def test_compose_gives_each_service_the_supervisors_stop_time() -> None:
    """A service killed before it drains loses what ``adplatform run`` waits for (the archive's batch)."""
    from adplatform.services import PLATFORM_SERVICES

    services = _compose()["services"]
    for svc in PLATFORM_SERVICES:
        grace = services[svc.name].get("stop_grace_period", "10s")
        assert grace.endswith("s"), grace
        assert float(grace[:-1]) >= svc.stop_timeout_s, (svc.name, grace, svc.stop_timeout_s)


# --- Metrics ports (issue 15): the same ports as adplatform.config and deploy/prometheus.yml ---


def test_compose_publishes_each_service_metrics_port_on_host_loopback() -> None:
    services = _compose()["services"]
    assert (
        _compose()["x-environment"]["ADP_METRICS_HOST"] == "0.0.0.0"
    )  # reachable from outside the container
    for name, port in DEFAULT_METRICS_PORTS.items():
        if name == "run":  # the supervisor: compose restarts the services itself, no `adplatform run`
            assert name not in services
            continue
        svc = services[name]
        assert svc["environment"]["ADP_METRICS_HOST"] == "0.0.0.0", name
        assert f"127.0.0.1:{port}:{port}" in svc.get("ports", []), name


def test_compose_admin_scrapes_every_metrics_port_by_service_name() -> None:
    admin = _compose()["services"]["admin"]["environment"]
    settings = load_admin_config(admin, dotenv=ROOT / "does-not-exist")
    expected = {f"http://adserver:{ADSERVER_PORT}/metrics"} | {
        f"http://{name}:{port}/metrics" for name, port in DEFAULT_METRICS_PORTS.items() if name != "run"
    }
    assert set(settings.scrape_urls) == expected
    assert settings.adserver_urls == (f"http://adserver:{ADSERVER_PORT}",)
