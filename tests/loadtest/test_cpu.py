"""The demo's CPU table from fake /proc snapshots: what counts, from when, under which name."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.cpu import TICKS_PER_S, CpuMeter, format_table, parse_machine, parse_stat, platform_label

T = int(TICKS_PER_S)


def stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int, start: int) -> str:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime
    # cstime priority nice threads itreal starttime vsize ...
    return (
        f"{pid} ({comm}) S {ppid} {ppid} {ppid} 0 -1 4194560 100 0 0 0 {utime} {stime} 7 7 20 0 1 0"
        f" {start} 1000 10 18446744073709551615\n"
    )


class FakeProc:
    """A /proc of our making: processes (stat, cmdline) and the machine's cpu lines."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(exist_ok=True)

    def proc(self, pid: int, comm: str, ppid: int, cpu: int, *, start: int = 1, argv: str = "") -> None:
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        (d / "stat").write_text(stat_line(pid, comm, ppid, cpu - cpu // 3, cpu // 3, start))
        (d / "cmdline").write_text(argv.replace(" ", "\0") + ("\0" if argv else ""))

    def gone(self, pid: int) -> None:
        for f in (self.root / str(pid)).iterdir():
            f.unlink()
        (self.root / str(pid)).rmdir()

    def machine(self, user: int, system: int, idle: int) -> None:
        (self.root / "stat").write_text(
            f"cpu  {user} 0 {system} {idle} 5 0 0 0 0 0\ncpu0 1 0 1 1 0 0 0 0 0 0\n"
            "cpu1 1 0 1 1 0 0 0 0 0 0\nintr 1 2 3\n"
        )


def test_parse_stat_takes_comm_with_spaces_and_parentheses() -> None:
    fields = parse_stat(stat_line(42, "a (b) c", 7, 150, 50, 999))
    assert fields.comm == "a (b) c" and fields.ppid == 7
    assert fields.cpu_ticks == 200 and fields.start_ticks == 999


def test_parse_machine_counts_busy_ticks_and_cores() -> None:
    busy, cpus = parse_machine("cpu  10 2 3 100 7 1 1 4 0 0\ncpu0 0\ncpu1 0\n")
    assert busy == 10 + 2 + 3 + 1 + 1 + 4 and cpus == 2


def test_table_counts_each_process_from_the_first_sample_and_names_the_tree(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc")
    fake.proc(100, "python", 1, 10 * T, argv="python -m loadtest.demo")
    fake.proc(200, "python", 100, 5 * T, argv="python -m adplatform.cli run manager adserver archive")
    fake.proc(201, "python", 200, 1 * T, argv="python -m adplatform.cli serve --workers 2")
    fake.proc(202, "python", 201, 3 * T, argv="python -B -c from multiprocessing.spawn import spawn_main; "
              "spawn_main(tracker_fd=7) --multiprocessing-fork")  # fmt: skip
    fake.proc(203, "python", 200, 2 * T, argv="python -m adplatform.cli archive run")
    fake.proc(300, "redis-server", 1, 50 * T)
    fake.proc(400, "unrelated", 1, 70 * T)
    fake.machine(user=1000 * T, system=0, idle=0)
    meter = CpuMeter(
        {"simulator": 100, "adplatform run": 200, "redis": 300}, proc=fake.root, namer=platform_label
    )
    meter.sample(0.0)

    # 10 s later: every process used some CPU, the archive started its JVM, a worker was replaced.
    fake.proc(100, "python", 1, 12 * T)
    fake.proc(200, "python", 100, 5 * T + T // 10)
    fake.proc(201, "python", 200, 1 * T)
    fake.proc(202, "python", 201, 6 * T)
    fake.proc(203, "python", 200, 3 * T)
    fake.proc(204, "java", 203, 4 * T, start=50)  # new: all of its 4 s counts
    fake.proc(300, "redis-server", 1, 51 * T)
    fake.proc(400, "unrelated", 1, 75 * T)
    fake.machine(user=1020 * T, system=0, idle=0)
    meter.sample(5.0)
    fake.gone(202)  # ended after its last sample: it keeps what it had used until then
    fake.proc(202, "python", 201, 0, start=60, argv="python -m something.else")  # pid reused
    fake.machine(user=1018 * T, system=2 * T, idle=0)
    meter.sample(10.0)

    table = meter.table()
    rows = {(r.label, r.pid): r for r in table.rows}
    assert table.wall_s == 10.0 and table.cpus == 2
    assert rows[("archive › JVM", 204)].cpu_s == pytest.approx(4.0)
    assert rows[("adserver › worker", 202)].cpu_s == pytest.approx(3.0)
    assert rows[("adserver › python", 202)].cpu_s == 0.0  # the new process under the reused pid
    assert rows[("simulator", 100)].cpu_s == pytest.approx(2.0)
    assert rows[("adplatform run", 200)].cpu_s == pytest.approx(0.1)
    assert rows[("archive", 203)].cpu_s == pytest.approx(1.0)
    assert rows[("adserver", 201)].cpu_s == 0.0
    assert rows[("redis", 300)].share == pytest.approx(0.1)
    assert ("unrelated", 400) not in rows and all(r.pid != 400 for r in table.rows)
    # Largest first; shares of one core over the wall time.
    assert [r.label for r in table.rows][:3] == ["archive › JVM", "adserver › worker", "simulator"]
    assert table.measured_share == pytest.approx((4 + 3 + 2 + 0.1 + 1 + 1) / 10)
    assert table.machine_share == pytest.approx(2.0)
    assert table.other_share == pytest.approx(2.0 - 1.11)
    text = format_table(table)
    assert "archive › JVM" in text and "40.0%" in text and "of 200%" in text


def test_a_root_that_is_gone_or_an_empty_meter_gives_an_empty_table(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc")
    fake.machine(user=0, system=0, idle=100)
    meter = CpuMeter({"gone": 12345}, proc=fake.root)
    assert meter.table().rows == () and meter.table().wall_s == 0.0
    meter.sample(1.0)
    meter.sample(2.0)
    table = meter.table()
    assert table.rows == () and table.machine_share == 0.0 and table.other_share == 0.0


def test_a_light_last_sample_still_times_the_run_and_reads_the_machine(tmp_path: Path) -> None:
    """``sample(full=False)`` (bench.cpu_share's end of a wrk run) re-reads the known processes only, but
    the wall time and the machine's busy time run to it: without them a run showed 0 s and machine 0."""
    fake = FakeProc(tmp_path / "proc")
    fake.proc(100, "python", 1, 10 * T)
    fake.machine(user=1000 * T, system=0, idle=0)
    meter = CpuMeter({"server": 100}, proc=fake.root)
    meter.sample(0.0)
    fake.proc(100, "python", 1, 13 * T)
    fake.machine(user=1006 * T, system=2 * T, idle=0)
    meter.sample(4.0, full=False)
    table = meter.table()
    assert table.wall_s == 4.0
    assert table.rows[0].cpu_s == pytest.approx(3.0)
    assert table.machine_share == pytest.approx(2.0)
