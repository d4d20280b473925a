"""The demo's ports: one another process holds ends the demo at once, before it makes anything, with one
line naming the port, the process and the option that moves it (its ad server would fail to bind and the
demo wait 120 s for workers that never come)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.demo import Ports
from tests import ports

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def held_port() -> Iterator[int]:
    with ports.held_port() as port:
        yield port


def test_a_held_ad_server_port_ends_the_demo_naming_it(held_port: int) -> None:
    with pytest.raises(SystemExit) as caught:
        Ports(adserver=held_port, admin=ports.free_port()).ensure_free(live=False)
    message = str(caught.value.code)
    assert message.startswith(
        f"the demo's ad server needs 127.0.0.1:{held_port}, in use by pid {os.getpid()}"
    )
    assert message.endswith("python -m loadtest.demo --port N")


def test_the_admin_port_matters_only_live(held_port: int) -> None:
    demo_ports = Ports(adserver=ports.free_port(), admin=held_port)
    demo_ports.ensure_free(live=False)
    with pytest.raises(SystemExit, match=f"admin service needs 127.0.0.1:{held_port}.*--admin-port N"):
        demo_ports.ensure_free(live=True)


def test_the_command_stops_before_it_touches_anything(held_port: int, tmp_path: Path) -> None:
    """No service is reached: the stores point at port 1, where nothing listens, and the answer is the
    port's line, not a service's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADP_")} | {
        "ADP_PG_DSN": "postgresql://postgres@127.0.0.1:1/adplatform",
        "ADP_REDIS_URL": "redis://127.0.0.1:1/0",
        "ADP_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "ADP_STACK_DIR": str(tmp_path / ".stack"),
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.demo", "--port", str(held_port), "--duration", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.strip().startswith(f"the demo's ad server needs 127.0.0.1:{held_port}"), done.stderr
    assert done.stdout == "" and not (tmp_path / ".stack").exists()
