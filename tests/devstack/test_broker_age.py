"""A young broker is told from a warm one by its process's age, read from /proc: what the demo and the HTTP
benches use to load it first, unmeasured (its JIT compiles its hot paths during its first minute of load)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from adplatform.config import Config, load_config
from adplatform.pidfile import age_s, write_pid_file
from bench.http_stack import BROKER_WARM_UP_S, broker_warm_up_s
from devstack import kafka
from devstack.paths import Paths
from loadtest.demo import WARM_UP_S, warm_up_s


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    config = load_config({"ADP_STACK_DIR": str(tmp_path / ".stack")}, dotenv=tmp_path / "none")
    Paths(config.stack_dir).run.mkdir(parents=True)
    return config


def test_age_of_a_process_just_started_and_of_one_gone(sleeper: subprocess.Popen[bytes]) -> None:
    age = age_s(sleeper.pid)
    assert age is not None and 0.0 <= age < 30.0
    own = age_s(1)  # init started at boot, long before this test's process
    assert own is not None and own > age
    sleeper.kill()
    sleeper.wait()
    assert age_s(sleeper.pid) is None


def test_a_broker_just_started_is_young_and_one_past_the_bound_is_not(
    cfg: Config, sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = Paths(cfg.stack_dir)
    assert kafka.young_broker_age_s(paths) is None  # no broker of this stack's runs

    write_pid_file(paths.pid_file("kafka"), sleeper.pid)  # a recorded process, as `stack up` writes
    age = kafka.young_broker_age_s(paths)
    assert age is not None and age < kafka.YOUNG_BROKER_S

    monkeypatch.setattr(kafka, "YOUNG_BROKER_S", 0.0)
    assert kafka.young_broker_age_s(paths) is None


def test_the_benches_warm_a_young_broker_unless_told(
    cfg: Config, sleeper: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    assert broker_warm_up_s(cfg, None) == 0  # no broker: nothing to warm
    write_pid_file(Paths(cfg.stack_dir).pid_file("kafka"), sleeper.pid)

    assert broker_warm_up_s(cfg, None) == BROKER_WARM_UP_S
    assert "warming up: the stack's Kafka broker started" in capsys.readouterr().out
    assert broker_warm_up_s(cfg, 0) == 0
    assert capsys.readouterr().out == ""
    assert broker_warm_up_s(cfg, 7) == 7
    assert capsys.readouterr().out.startswith("warming up: 7 s of load")  # asked for: no age given


def test_the_demo_warms_a_young_broker_unless_told() -> None:
    assert warm_up_s(12.0, None) == WARM_UP_S
    assert warm_up_s(None, None) == 0.0
    assert warm_up_s(12.0, 0) == 0.0
    assert warm_up_s(None, 5) == 5.0
