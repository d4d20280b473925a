"""``adplatform.supervisor``: backoff, line prefixing, and a supervisor of small real child processes."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from adplatform.services import PLATFORM_SERVICES, STOP_ORDER
from adplatform.supervisor import (
    Backoff,
    ChildSpec,
    LineSplitter,
    Supervisor,
    describe_exit,
    next_run_delay_s,
    platform_children,
    prefix_of,
    prefixed,
    with_option,
)


def test_backoff_doubles_from_one_second_to_thirty() -> None:
    backoff = Backoff()
    assert [backoff.delay_s(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_backoff_resets_after_a_minute_up() -> None:
    backoff = Backoff()
    crashes = 0
    for _ in range(4):  # four quick crashes in a row
        crashes = backoff.crashes_after(crashes, uptime_s=2.0)
    assert (crashes, backoff.delay_s(crashes)) == (4, 8)
    crashes = backoff.crashes_after(crashes, uptime_s=60.0)  # it had been healthy for a minute
    assert (crashes, backoff.delay_s(crashes)) == (1, 1)


def test_line_splitter_keeps_partial_lines_until_their_end() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"one\ntw") == [b"one"]
    assert splitter.feed(b"o\r\nthree\n\nfour") == [b"two", b"three", b""]
    assert splitter.close() == [b"four"]
    assert splitter.close() == []


def test_line_splitter_cuts_a_line_longer_than_its_limit() -> None:
    splitter = LineSplitter(max_line=4)
    assert splitter.feed(b"abcdefghij") == [b"abcd", b"efgh"]
    assert splitter.feed(b"k\n") == [b"ijk"]


def test_prefix_aligns_names() -> None:
    block = prefixed(prefix_of("ledger", 13), [b"a", b"b"]) + prefixed(prefix_of("served-writer", 13), [b"c"])
    assert block.decode().splitlines() == ["ledger        | a", "ledger        | b", "served-writer | c"]


def test_describe_exit() -> None:
    assert (describe_exit(3), describe_exit(-9)) == ("exited with 3", "killed by SIGKILL")


def test_with_option_replaces_or_appends() -> None:
    argv = ("serve", "--workers", "2", "--port", "8000")
    assert with_option(argv, "--workers", "4") == ("serve", "--workers", "4", "--port", "8000")
    assert with_option(("serve",), "--port", "9") == ("serve", "--port", "9")


def test_every_service_has_a_place_in_the_stop_order() -> None:
    assert {s.name for s in PLATFORM_SERVICES} <= set(STOP_ORDER)
    names = [c.name for c in platform_children()]
    assert names == [n for n in STOP_ORDER if n in names]  # producers of work first, the archive last
    assert names[0] == "adserver" and names[-1] == "archive"


def test_platform_children_run_the_cli_with_the_ad_servers_options() -> None:
    children = platform_children(["ledger", "adserver", "ledger"], workers=3, port=8123)
    assert [c.name for c in children] == ["adserver", "ledger"]
    assert children[0].argv == (
        sys.executable, "-m", "adplatform.cli", "serve", "--workers", "3", "--port", "8123"
    )  # fmt: skip
    (admin,) = platform_children(["admin"], admin_port=8101)
    assert admin.argv[-2:] == ("--port", "8101")
    with pytest.raises(KeyError, match="no platform service 'nope'"):
        platform_children(["nope"])


def test_next_run_comes_a_period_after_the_previous_start_or_at_once() -> None:
    assert next_run_delay_s(600, started_at=1000.0, now=1000.0 + 42) == 558
    assert next_run_delay_s(600, started_at=1000.0, now=1000.0 + 600) == 0
    assert next_run_delay_s(600, started_at=1000.0, now=1000.0 + 1900) == 0  # one late run, not three


def test_the_warehouse_load_runs_periodically_only_when_configured() -> None:
    assert "warehouse-load" not in [c.name for c in platform_children()]
    children = platform_children(warehouse_load_interval_s=300)
    load = children[0]  # first in stop order: a load may stop anywhere
    assert (load.name, load.every_s, load.max_run_s) == ("warehouse-load", 300.0, 3600.0)
    assert load.argv == (sys.executable, "-m", "adplatform.cli", "warehouse", "load")
    assert [c.name for c in children[1:]] == [c.name for c in platform_children()]
    assert [c.name for c in platform_children(["ledger"], warehouse_load_interval_s=300)] == ["ledger"]
    named = platform_children(["warehouse-load", "archive"], warehouse_load_interval_s=60)
    assert [c.name for c in named] == ["warehouse-load", "archive"]
    with pytest.raises(ValueError, match="ADP_WAREHOUSE_LOAD_INTERVAL_S"):
        platform_children(["warehouse-load"])


def test_batch_work_runs_at_a_lower_priority_than_serving() -> None:
    nice = {c.name: c.nice for c in platform_children(warehouse_load_interval_s=60)}
    assert nice["archive"] == nice["warehouse-load"] == 10
    assert {name for name, value in nice.items() if value} == {"archive", "warehouse-load"}


async def test_a_child_and_its_own_children_run_at_its_niceness(tmp_path: Path) -> None:
    # The child starts a grandchild (as the archive starts Spark's JVM); both report their niceness.
    code = (
        "import os, subprocess, sys\n"
        "print('child', os.nice(0), flush=True)\n"
        "subprocess.run([sys.executable, '-c', 'import os; print(\"grandchild\", os.nice(0))'])\n"
    )
    out = io.BytesIO()
    base = os.nice(0)
    sup = Supervisor([ChildSpec("batch", _py(code), nice=5)], out=out, backoff=FAST)
    assert await asyncio.wait_for(sup.run(), 30) == 0
    log = out.getvalue().decode()
    assert f"batch | child {base + 5}" in log and f"batch | grandchild {base + 5}" in log


@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="the kernel groups no sessions")
async def test_a_niced_childs_session_group_gets_its_niceness_too() -> None:
    """Each child has a session of its own, which the kernel's autogroups make a scheduling group of its
    own: CPU is shared between groups by the group's niceness, so the child's alone changed nothing."""
    code = "print('group', open('/proc/self/autogroup').read().split()[-1], flush=True)\n"
    out = io.BytesIO()
    base = os.nice(0)
    sup = Supervisor([ChildSpec("batch", _py(code), nice=5)], out=out, backoff=FAST)
    assert await asyncio.wait_for(sup.run(), 30) == 0
    assert f"batch | group {base + 5}" in out.getvalue().decode()


def _py(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


async def _until(predicate: object, timeout_s: float = 10) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 (a condition of other processes: polled)
            await asyncio.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


FAST = Backoff(initial_s=0.05, max_s=0.2, reset_after_s=60)


async def test_a_crashed_child_restarts_with_backoff_and_one_that_exits_0_does_not(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    crasher = f"import sys; f = open({str(runs)!r}, 'a'); f.write('x'); f.close(); print('up'); sys.exit(3)"
    out = io.BytesIO()
    sup = Supervisor(
        [ChildSpec("crasher", _py(crasher)), ChildSpec("once", _py("print('done')"))], out=out, backoff=FAST
    )
    task = asyncio.create_task(sup.run())
    await _until(lambda: sup.restarts()["crasher"] >= 3)
    sup.stop()
    assert await asyncio.wait_for(task, 10) == 0
    log = out.getvalue().decode()
    assert sup.states["once"].done and sup.restarts()["once"] == 0
    assert "once finished (exit 0); not restarted" in log
    assert "crasher exited with 3" in log and "restart 1 in 0.05s" in log and "restart 2 in 0.1s" in log
    assert "restart 3 in 0.2s" in log
    # The stop may come before the last restart's child wrote its mark.
    assert len(runs.read_text()) - sup.restarts()["crasher"] in (0, 1)
    assert re.search(r"^crasher \| up$", log, re.M)


async def test_a_periodic_child_runs_again_each_period_and_a_hung_run_is_stopped(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    job = f"f = open({str(runs)!r}, 'a'); f.write('x'); f.close(); print('loaded')"
    hung = "import time; print('hanging', flush=True); time.sleep(60)"
    out = io.BytesIO()
    sup = Supervisor(
        [
            ChildSpec("job", _py(job), every_s=0.2, max_run_s=5),
            ChildSpec("hung", _py(hung), every_s=0.2, max_run_s=0.3, stop_timeout_s=2),
        ],
        out=out,
    )
    task = asyncio.create_task(sup.run())
    await _until(lambda: sup.states["job"].runs >= 3 and sup.states["hung"].runs >= 2)
    sup.stop()
    assert await asyncio.wait_for(task, 10) == 0  # a run stopped at its bound is not an unclean stop
    log = out.getvalue().decode()
    job_state, hung_state = sup.states["job"], sup.states["hung"]
    assert (job_state.failed_runs, job_state.restarts, job_state.done) == (0, 0, False)
    assert len(runs.read_text()) in (job_state.runs, job_state.runs + 1)
    assert re.search(r"job exited with 0 after [0-9.]+s; next run in 0\.[0-9]s", log)
    assert "hung still running after 0.3s: stopping it" in log
    assert hung_state.failed_runs == hung_state.runs and hung_state.last_exit == -signal.SIGTERM


async def test_lines_of_children_never_mix(tmp_path: Path) -> None:
    # Two children write long lines in small pieces at the same time.
    code = (
        "import sys, time\n"
        "for i in range(30):\n"
        "    for part in range(10):\n"
        "        sys.stdout.write(chr(65 + i % 26) * 50); sys.stdout.flush(); time.sleep(0.001)\n"
        "    sys.stdout.write('\\n'); sys.stderr.write('err\\n')\n"
    )
    out = io.BytesIO()
    sup = Supervisor([ChildSpec("a", _py(code)), ChildSpec("bb", _py(code))], out=out, backoff=FAST)
    assert await asyncio.wait_for(sup.run(), 30) == 0  # both finished with exit 0
    lines = [line for line in out.getvalue().decode().splitlines() if not line.startswith("run")]
    assert len(lines) == 2 * 30 * 2
    for line in lines:
        name, text = line.split(" | ", 1)
        assert name.strip() in {"a", "bb"} and len(name) == 3
        assert text == "err" or (len(text) == 500 and len(set(text)) == 1), line


async def test_stop_goes_in_order_and_kills_only_after_the_timeout(tmp_path: Path) -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('up', flush=True); time.sleep(60)"
    )
    polite = "import time; print('up', flush=True); time.sleep(60)"
    out = io.BytesIO()
    sup = Supervisor(
        [
            ChildSpec("first", _py(polite)),
            ChildSpec("stubborn", _py(stubborn), stop_timeout_s=0.5),
            ChildSpec("last", _py(polite)),
        ],
        out=out,
    )
    task = asyncio.create_task(sup.run())
    await _until(lambda: out.getvalue().count(b"| up") == 3)
    pids = [st.pid for st in sup.states.values()]
    sup.stop()
    assert await asyncio.wait_for(task, 10) == 1  # one had to be killed: not a clean stop
    log = out.getvalue().decode()
    stops = [m.group(1) for m in re.finditer(r"^run\s+\| stopping (\S+)", log, re.M)]
    assert stops == ["first", "stubborn", "last"]
    assert "stubborn did not stop within 0.5s: killing its process group" in log
    assert "first stopped (killed by SIGTERM)" in log
    assert not any(_alive(pid) for pid in pids if pid is not None)


async def test_a_crash_takes_the_childs_own_children_with_it(tmp_path: Path) -> None:
    # A parent with a child of its own (as uvicorn with its workers) is SIGKILLed: the orphan goes too.
    grandchild = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(grandchild)!r}, 'w').write(str(p.pid))\n"
        "print('up', flush=True); time.sleep(60)\n"
    )
    out = io.BytesIO()
    sup = Supervisor([ChildSpec("parent", _py(code))], out=out, backoff=Backoff(initial_s=30))
    task = asyncio.create_task(sup.run())
    await _until(lambda: grandchild.exists() and grandchild.read_text() != "")
    orphan = int(grandchild.read_text())
    pid = sup.states["parent"].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await _until(lambda: b"parent killed by SIGKILL" in out.getvalue())
    await _until(lambda: not _alive(orphan))
    sup.stop()  # during the backoff: nothing left to stop
    assert await asyncio.wait_for(task, 10) == 0
    assert sup.restarts() == {"parent": 0}
