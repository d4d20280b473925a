"""PID files are checked against /proc before they are trusted or signalled: a stale one (a reboot, a crash,
a PID now held by another process) is reported and removed, and that other process is never signalled."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from adplatform.config import Config, load_config
from adplatform.pidfile import age_s, boot_id, read_pid_file, start_ticks, why_stale, write_pid_file
from bench.http_stack import BROKER_WARM_UP_S, broker_warm_up_s
from devstack import kafka, stack
from devstack.paths import Paths
from devstack.pids import read_pid
from loadtest.demo import WARM_UP_S, warm_up_s
from loadtest.supervisor import Supervisor


@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated live process (``sleep 60``): whatever a stale PID file points at after a reboot."""
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    config = load_config({"ADP_STACK_DIR": str(tmp_path / ".stack")}, dotenv=tmp_path / "none")
    Paths(config.stack_dir).run.mkdir(parents=True)
    return config


def _record_before_reboot(path: Path, pid: int) -> None:
    """What kafka.pid holds after a reboot: the PID with the start time and boot id of the old boot."""
    path.write_text(json.dumps({"pid": pid, "start_ticks": 12345, "boot_id": "0000-before-reboot"}))


@pytest.mark.parametrize("kind", ["bare number", "record of another boot", "record of another start"])
def test_stop_never_signals_a_stranger_holding_the_recorded_pid(
    kind: str, cfg: Config, stranger: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    pid_file = Paths(cfg.stack_dir).pid_file("kafka")
    if kind == "bare number":
        pid_file.write_text(str(stranger.pid))
    elif kind == "record of another boot":
        _record_before_reboot(pid_file, stranger.pid)
    else:
        ticks = start_ticks(stranger.pid)
        assert ticks is not None
        pid_file.write_text(json.dumps({"pid": stranger.pid, "start_ticks": ticks - 1, "boot_id": boot_id()}))

    stack.stop_service(cfg, "kafka")

    assert stranger.poll() is None, "stack down signalled an unrelated process"
    assert not pid_file.exists()
    out = capsys.readouterr().out
    assert f"stale PID file {pid_file}" in out and "nothing signalled" in out


def test_a_stale_kafka_pid_after_a_reboot_does_not_count_as_running(
    cfg: Config, stranger: subprocess.Popen[bytes]
) -> None:
    # `stack up` starts Kafka only when read_pid says none runs, and gives up when it says the broker died.
    pid_file = Paths(cfg.stack_dir).pid_file("kafka")
    _record_before_reboot(pid_file, stranger.pid)
    assert read_pid(Paths(cfg.stack_dir), "kafka") is None
    assert not pid_file.exists()


def test_the_recorded_process_itself_is_stopped(cfg: Config) -> None:
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        pid_file = Paths(cfg.stack_dir).pid_file("kafka")
        write_pid_file(pid_file, child.pid)
        assert read_pid(Paths(cfg.stack_dir), "kafka") == child.pid
        stack.stop_service(cfg, "kafka")
        assert child.wait(5) == -15  # SIGTERM
        assert not pid_file.exists()
    finally:
        child.kill()
        child.wait()


def test_a_bare_number_is_honoured_when_the_command_line_is_the_service(tmp_path: Path) -> None:
    paths = Paths(tmp_path / ".stack")
    paths.run.mkdir(parents=True)
    # A stand-in whose command line is the stack's broker's: `… kafka.Kafka <stack>/kafka/server.properties`.
    code = "import time; time.sleep(60)"
    argv = [sys.executable, "-c", code, "kafka.Kafka", str(paths.kafka / "server.properties")]
    child = subprocess.Popen(argv)
    try:
        paths.pid_file("kafka").write_text(f"{child.pid}\n")
        assert read_pid(paths, "kafka") == child.pid
    finally:
        child.kill()
        child.wait()


def test_record_round_trip_and_dead_process(tmp_path: Path) -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    path = tmp_path / "x.pid"
    path.write_text(json.dumps({"pid": child.pid, "start_ticks": 1, "boot_id": boot_id()}))
    record = read_pid_file(path)
    assert record is not None and record.start_ticks == 1
    assert why_stale(record) is not None
    assert read_pid_file(tmp_path / "missing.pid") is None


def test_demo_stop_recorded_skips_a_stranger_and_stops_its_own(
    tmp_path: Path, stranger: subprocess.Popen[bytes]
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "old.pid").write_text(str(stranger.pid))
    _record_before_reboot(run_dir / "rebooted.pid", stranger.pid)
    own = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        write_pid_file(run_dir / "own.pid", own.pid)
        reports: list[str] = []
        stopped = Supervisor.stop_recorded(run_dir, report=reports.append)
        assert stopped == ["own"]
        assert own.wait(5) == -15
        assert stranger.poll() is None
        assert len(reports) == 2 and all("stale PID file" in r for r in reports)
        assert list(run_dir.iterdir()) == []
    finally:
        own.kill()
        own.wait()


# A young broker is told from a warm one by its process's age, read from /proc: what the demo and the
# feedback bench use to load it first, unmeasured (its JIT compiles its hot paths in its first minute of
# load).


def test_age_of_a_process_just_started_and_of_one_gone(stranger: subprocess.Popen[bytes]) -> None:
    age = age_s(stranger.pid)
    assert age is not None and 0.0 <= age < 30.0
    own = age_s(1)  # init started at boot, long before this test's process
    assert own is not None and own > age
    stranger.kill()
    stranger.wait()
    assert age_s(stranger.pid) is None


def test_a_broker_just_started_is_young_and_one_past_the_bound_is_not(
    cfg: Config, stranger: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = Paths(cfg.stack_dir)
    assert kafka.young_broker_age_s(paths) is None  # no broker of this stack's runs

    write_pid_file(paths.pid_file("kafka"), stranger.pid)  # a recorded process, as `stack up` writes
    age = kafka.young_broker_age_s(paths)
    assert age is not None and age < kafka.YOUNG_BROKER_S

    monkeypatch.setattr(kafka, "YOUNG_BROKER_S", 0.0)
    assert kafka.young_broker_age_s(paths) is None


def test_the_benches_warm_a_young_broker_unless_told(
    cfg: Config, stranger: subprocess.Popen[bytes], capsys: pytest.CaptureFixture[str]
) -> None:
    assert broker_warm_up_s(cfg, None) == 0  # no broker: nothing to warm
    write_pid_file(Paths(cfg.stack_dir).pid_file("kafka"), stranger.pid)

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
