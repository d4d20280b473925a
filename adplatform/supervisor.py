"""One supervisor for the platform's long-running processes (`adplatform run`).

Each child runs in its own process group with stdout and stderr merged into one pipe; the supervisor writes
every line to one stream, prefixed with the child's name, so lines of different children never mix mid-line.
A child that exits non-zero (or is killed) is restarted after an exponential backoff; one that exits 0
finished a bounded run and stays down. ``stop()`` stops the children one after another in the order given
(producers of work first), each with its own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO, Final

logger = logging.getLogger(__name__)

#: A line longer than this is written in pieces (each prefixed) instead of growing a buffer without bound.
MAX_LINE_BYTES: Final = 64 * 1024
#: The name the supervisor's own lines carry.
SELF_NAME: Final = "run"


def lower_priority(pid: int, nice: int) -> None:
    """Give ``pid`` (a child just started in its own session) ``nice`` more niceness than this process, and
    its session's scheduling group the same.

    Where the kernel groups each session's tasks (``sched_autogroup``, on by default on desktop and many
    server kernels, and on this project's machines), CPU time is shared between the groups first, each
    group by its own niceness, and a task's niceness only ranks it inside its group. A child in a session
    of its own is a group alone: its niceness alone changes nothing, and the batch JVM took a full group's
    share beside the ad server's (the demo's feedback p99). Writing the group's niceness
    (``/proc/PID/autogroup``) makes it count; without autogroups the file is missing or has no effect."""
    value = max(-20, min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))
    with contextlib.suppress(OSError):  # it died already: the exit is reported as usual
        os.setpriority(os.PRIO_PROCESS, pid, value)
    with contextlib.suppress(OSError), open(f"/proc/{pid}/autogroup", "w") as group:  # none here, or it died
        group.write(str(value))


@dataclass(frozen=True)
class Backoff:
    """Delay before restarting a crashed child: ``initial_s`` doubling per crash up to ``max_s``; a child that
    stayed up ``reset_after_s`` seconds counts as healthy again, so its next crash waits ``initial_s``."""

    initial_s: float = 1.0
    max_s: float = 30.0
    reset_after_s: float = 60.0

    def delay_s(self, crashes: int) -> float:
        """The wait before the restart that follows the ``crashes``-th consecutive crash (1, 2, ...)."""
        return min(self.max_s, self.initial_s * 2.0 ** max(0, crashes - 1))

    def crashes_after(self, previous: int, uptime_s: float) -> int:
        """The consecutive-crash count after a crash that ended ``uptime_s`` seconds of running."""
        return 1 if uptime_s >= self.reset_after_s else previous + 1


@dataclass(frozen=True)
class ChildSpec:
    """A child to supervise: its name (the log prefix) and its full command line."""

    name: str
    argv: tuple[str, ...]
    #: How long a SIGTERM may take before the child's whole process group is killed.
    stop_timeout_s: float = 30.0
    #: Variables added to the supervisor's environment for this child alone.
    env: tuple[tuple[str, str], ...] = ()
    #: A periodic child (a bounded job): started again ``every_s`` seconds after its previous start whatever
    #: its exit (``next_run_delay_s``), never two runs at once; None: a service, restarted only on a crash.
    every_s: float | None = None
    #: A periodic run still going after this long is stopped (SIGTERM, then its group killed).
    max_run_s: float | None = None
    #: Niceness added to the child's (0: the supervisor's own priority); its own children inherit it.
    nice: int = 0


@dataclass
class ChildState:
    """What the supervisor knows of one child; read by ``Supervisor.states`` (e.g. for metrics)."""

    spec: ChildSpec
    restarts: int = 0
    crashes: int = 0
    pid: int | None = None
    started_at: float | None = None
    last_exit: int | None = None
    #: A child that exited 0 (a bounded run) is done: not restarted.
    done: bool = False
    #: Runs of a periodic child that ended, and how many of those did not exit 0.
    runs: int = 0
    failed_runs: int = 0
    proc: asyncio.subprocess.Process | None = field(default=None, repr=False)


class LineSplitter:
    """Turns chunks of a byte stream into complete lines (without their newline); a partial line waits for
    the next chunk, except past ``max_line`` bytes, where it is cut so memory stays bounded."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self._rest = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The complete lines that ``chunk`` ends (a trailing ``\\r`` dropped)."""
        data = self._rest + chunk
        *lines, rest = data.split(b"\n")
        while len(rest) > self.max_line:
            lines.append(rest[: self.max_line])
            rest = rest[self.max_line :]
        self._rest = rest
        return [line.removesuffix(b"\r") for line in lines]

    def close(self) -> list[bytes]:
        """What is left at end of stream (a last line without a newline)."""
        rest, self._rest = self._rest, b""
        return [rest.removesuffix(b"\r")] if rest else []


def prefix_of(name: str, width: int) -> bytes:
    """The prefix of ``name``'s lines: the name left-aligned in ``width`` columns, then ``| ``."""
    return f"{name:<{width}} | ".encode()


def prefixed(prefix: bytes, lines: Iterable[bytes]) -> bytes:
    """``lines`` as one block, each line prefixed and newline-terminated (one write keeps them whole)."""
    return b"".join(prefix + line + b"\n" for line in lines)


def next_run_delay_s(every_s: float, started_at: float, now: float) -> float:
    """Seconds until a periodic child's next run: ``every_s`` after the previous run started, at once when
    that run took longer (late runs are not made up for: one run, not a burst)."""
    return max(0.0, started_at + every_s - now)


def describe_exit(returncode: int) -> str:
    """``exited with 3`` or ``killed by SIGKILL`` (asyncio reports a signal as a negative return code)."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with {returncode}"


class Supervisor:
    """Runs children, restarts crashed ones with backoff, and stops them all in order on ``stop()``.

    ``specs`` are given in stop order: the first is stopped first. They start in the reverse order, so the
    consumers of work are up before its producers.
    """

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        out: BinaryIO | None = None,
        backoff: Backoff = Backoff(),
        env: dict[str, str] | None = None,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must be unique: {names}")
        self.specs = tuple(specs)
        self.backoff = backoff
        self._out = out if out is not None else sys.stdout.buffer
        self._env = dict(os.environ if env is None else env)
        self._width = max([len(SELF_NAME), *(len(n) for n in names)])
        self._states = {s.name: ChildState(s) for s in specs}
        self._stopping = asyncio.Event()
        self._clean = True

    @property
    def states(self) -> dict[str, ChildState]:
        """Each child's state by name (restart counts, pid, last exit), live."""
        return self._states

    def restarts(self) -> dict[str, int]:
        """How many times each child has been restarted after a crash."""
        return {name: st.restarts for name, st in self._states.items()}

    def stop(self) -> None:
        """Ask ``run`` to stop every child in order and return (safe to call from a signal handler)."""
        self._stopping.set()

    def log(self, message: str) -> None:
        """A line of the supervisor's own in the stream."""
        self._write(prefix_of(SELF_NAME, self._width), message.encode().splitlines())

    def _write(self, prefix: bytes, lines: list[bytes]) -> None:
        if lines:
            self._out.write(prefixed(prefix, lines))
            self._out.flush()

    async def run(self) -> int:
        """Run until ``stop()`` (or until every child finished with exit 0); 0 when every child stopped
        within its timeout, 1 when one had to be killed."""
        keepers = [asyncio.create_task(self._keep(st)) for st in reversed(self._states.values())]
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([stopping, *keepers], return_when=asyncio.FIRST_COMPLETED)
            while not stopping.done() and not all(k.done() for k in keepers):
                await asyncio.wait([stopping, *keepers], return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._stopping.set()
            for state in self._states.values():  # in stop order
                await self._stop_child(state)
            # A child whose (re)start was under way while its turn passed: stop it too.
            for state in self._states.values():
                if state.proc is not None and state.proc.returncode is None:
                    await self._stop_child(state)
            await asyncio.gather(*keepers)
            stopping.cancel()
        self.log("all stopped" + ("" if self._clean else " (some had to be killed)"))
        return 0 if self._clean else 1

    async def _keep(self, state: ChildState) -> None:
        """Start the child; while not stopping, restart it after each crash (or run it periodically)."""
        spec = state.spec
        if spec.every_s is not None:
            await self._keep_periodic(state, spec.every_s)
            return
        while not self._stopping.is_set():
            ended = await self._run_once(state)
            if ended is None:  # stopped by the supervisor
                return
            returncode, uptime_s = ended
            state.last_exit = returncode
            if returncode == 0:
                state.done = True
                self.log(f"{spec.name} finished (exit 0); not restarted")
                return
            state.crashes = self.backoff.crashes_after(state.crashes, uptime_s)
            delay_s = self.backoff.delay_s(state.crashes)
            self.log(
                f"{spec.name} {describe_exit(returncode)} after {uptime_s:.1f}s;"
                f" restart {state.restarts + 1} in {delay_s:g}s"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay_s)
            if self._stopping.is_set():
                return
            state.restarts += 1

    async def _keep_periodic(self, state: ChildState, every_s: float) -> None:
        """Run the child, then again ``every_s`` after each start, until stopping; a failed run is logged
        and counted, and the next one comes at its time as usual (no backoff: the period is one)."""
        spec = state.spec
        while not self._stopping.is_set():
            ended = await self._run_once(state)
            if ended is None:  # stopped by the supervisor
                return
            returncode, uptime_s = ended
            state.last_exit = returncode
            state.runs += 1
            state.failed_runs += returncode != 0
            started_at = state.started_at if state.started_at is not None else time.monotonic()
            delay_s = next_run_delay_s(every_s, started_at, time.monotonic())
            self.log(
                f"{spec.name} {describe_exit(returncode)} after {uptime_s:.1f}s; next run in {delay_s:.1f}s"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay_s)

    async def _run_once(self, state: ChildState) -> tuple[int, float] | None:
        """Run the child until it exits: its return code and uptime, or None if the supervisor stopped it."""
        try:
            proc = await self._spawn(state)
        except OSError as exc:  # e.g. a command that does not exist: a crash like any other
            self.log(f"{state.spec.name} could not start: {exc}")
            return 127, 0.0
        pump = asyncio.create_task(self._pump(state.spec.name, proc))
        returncode = await self._exited_within(state, proc)
        uptime_s = time.monotonic() - (state.started_at or time.monotonic())
        if self._stopping.is_set():
            # The stop ends what is left of the group, so the pipe closes; a process that left the group
            # and holds it does not keep the supervisor from returning.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pump, state.spec.stop_timeout_s + 5)
            return None
        # Children of an exited child (uvicorn's workers after their parent was killed) still hold its port
        # and its pipe: a crash takes them with it, as a stop that times out would.
        if _group_alive(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        await pump  # every line the child wrote is out before its exit is reported
        return returncode, uptime_s

    async def _exited_within(self, state: ChildState, proc: asyncio.subprocess.Process) -> int:
        """The child's return code; a run past ``max_run_s`` is stopped first (as a stop would, but not an
        unclean stop of the supervisor: ``run`` still returns 0 for it)."""
        limit_s = state.spec.max_run_s
        if limit_s is None:
            return await _exited(proc)
        try:
            return await asyncio.wait_for(_exited(proc), limit_s)
        except TimeoutError:
            pass
        self.log(f"{state.spec.name} still running after {limit_s:g}s: stopping it")
        clean = self._clean
        await self._stop_child(state)
        self._clean = clean
        return await _exited(proc)

    async def _spawn(self, state: ChildState) -> asyncio.subprocess.Process:
        spec = state.spec
        # PYTHONUNBUFFERED: a child's prints reach the stream as they happen, not when its buffer fills.
        env = {**self._env, "PYTHONUNBUFFERED": "1", **dict(spec.env)}
        proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            # Its own session (so its own process group): a terminal's Ctrl-C reaches the supervisor alone,
            # which stops the children in order, and a stop can signal a child's whole group.
            start_new_session=True,
        )
        state.proc, state.pid, state.started_at = proc, proc.pid, time.monotonic()
        if spec.nice:
            # Set from here rather than in a preexec_fn (unsafe beside threads): the child is still starting
            # its interpreter, long before it starts a JVM or any other process, which inherit the value.
            lower_priority(proc.pid, spec.nice)
        again = f", restart {state.restarts}" if state.restarts else ""
        self.log(f"{spec.name} started (pid {proc.pid}{again}): {' '.join(spec.argv)}")
        return proc

    async def _pump(self, name: str, proc: asyncio.subprocess.Process) -> None:
        """Copy the child's output to the stream, line by line with its prefix, until end of file."""
        assert proc.stdout is not None  # stdout=PIPE
        prefix, splitter = prefix_of(name, self._width), LineSplitter()
        while chunk := await proc.stdout.read(65536):
            self._write(prefix, splitter.feed(chunk))
        self._write(prefix, splitter.close())

    async def _stop_child(self, state: ChildState) -> None:
        """SIGTERM the child (it stops its own children, e.g. the ad server's workers or Spark's JVM), wait
        up to its timeout, then SIGTERM what is left of its group; SIGKILL the group only on timeout."""
        proc, spec = state.proc, state.spec
        if proc is None:
            return
        deadline = time.monotonic() + spec.stop_timeout_s
        if proc.returncode is None:
            self.log(f"stopping {spec.name} (pid {proc.pid})")
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_exited(proc), max(0.0, deadline - time.monotonic()))
        if proc.returncode is not None and not _group_alive(proc.pid):
            self.log(f"{spec.name} stopped ({describe_exit(proc.returncode)})")
            return
        if proc.returncode is not None:  # the leader is gone, some of its children are not
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            # Polled: nothing signals the end of processes that are not our children.
            while _group_alive(proc.pid) and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            if not _group_alive(proc.pid):
                self.log(f"{spec.name} stopped ({describe_exit(proc.returncode)})")
                return
        self._clean = False
        self.log(f"{spec.name} did not stop within {spec.stop_timeout_s:g}s: killing its process group")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await _exited(proc)


async def _exited(proc: asyncio.subprocess.Process) -> int:
    """The child's return code once it has exited. Not ``proc.wait()``: on Python 3.11 that also waits for
    its pipes to close, which a crashed child's orphans (holding its stdout) may never do."""
    while proc.returncode is None:  # noqa: ASYNC110 (set by the child watcher; polled, 10 times a second)
        await asyncio.sleep(0.1)
    return proc.returncode


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of the group exists (it changed its user)
        return True
    return True


def with_option(argv: tuple[str, ...], option: str, value: str) -> tuple[str, ...]:
    """``argv`` with ``option``'s value replaced by ``value`` (appended if ``option`` is absent)."""
    if option in argv:
        i = argv.index(option)
        return (*argv[: i + 1], value, *argv[i + 2 :])
    return (*argv, option, value)


def platform_children(
    names: Sequence[str] = (),
    *,
    workers: int | None = None,
    port: int | None = None,
    admin_port: int | None = None,
    warehouse_load_interval_s: int = 0,
) -> list[ChildSpec]:
    """The platform's services (all, or those named) as children in stop order, each started as
    ``python -m adplatform.cli ...`` with this interpreter; ``workers`` and ``port`` set the ad server's,
    ``admin_port`` the admin API's. With ``warehouse_load_interval_s`` > 0, ``warehouse load`` every that
    many seconds too (when all run, or it is named), first in stop order (it is safe to stop anywhere)."""
    from adplatform.services import PLATFORM_SERVICES, WAREHOUSE_LOAD, in_stop_order, service

    job = WAREHOUSE_LOAD
    wanted = [n for n in dict.fromkeys(names) if n != job.name]
    if job.name in names and warehouse_load_interval_s <= 0:
        raise ValueError(f"{job.name} runs every ADP_WAREHOUSE_LOAD_INTERVAL_S seconds: set it above 0")
    chosen = tuple(service(n) for n in wanted) if names else PLATFORM_SERVICES
    children: list[ChildSpec] = []
    if warehouse_load_interval_s > 0 and (not names or job.name in names):
        children.append(
            ChildSpec(
                job.name,
                (sys.executable, "-m", "adplatform.cli", *job.argv),
                stop_timeout_s=job.stop_timeout_s,
                every_s=float(warehouse_load_interval_s),
                max_run_s=job.max_run_s,
                nice=job.nice,
            )
        )
    for svc in in_stop_order(chosen):
        argv = svc.argv
        if svc.name == "adserver":
            argv = argv if workers is None else with_option(argv, "--workers", str(workers))
            argv = argv if port is None else with_option(argv, "--port", str(port))
        if svc.name == "admin" and admin_port is not None:
            argv = with_option(argv, "--port", str(admin_port))
        command = (sys.executable, "-m", "adplatform.cli", *argv)
        children.append(ChildSpec(svc.name, command, stop_timeout_s=svc.stop_timeout_s, nice=svc.nice))
    return children


async def run_supervised(children: Sequence[ChildSpec]) -> int:
    """Supervise ``children`` until SIGTERM or SIGINT (Ctrl-C), then stop them in order; the exit code."""
    from adplatform.process import stop_on_signals

    supervisor = Supervisor(children)
    with stop_on_signals(supervisor.stop):
        return await supervisor.run()
