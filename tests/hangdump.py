"""Before pytest-timeout stops a hung async test, print where each of its tasks waits.

pytest-timeout dumps the threads' stacks, which for a hung coroutine only show the event loop idling in
``select``. This plugin schedules, on the test's loop, a callback shortly before the timeout that prints
every pending task's coroutine stack to stderr (shown in the failure report), so a hang names its await.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import AsyncIterator

import pytest

#: Seconds before the timeout at which the tasks are printed.
MARGIN_S = 20.0


def _print_tasks(nodeid: str) -> None:
    tasks = [t for t in asyncio.all_tasks() if not t.done()]
    print(f"\n[hangdump] {nodeid}: {len(tasks)} pending tasks", file=sys.stderr)
    for task in tasks:
        print(f"--- {task.get_name()}", file=sys.stderr)
        for line in _await_chain(task.get_coro()):
            print(f"    {line}", file=sys.stderr)


def _await_chain(coro: object) -> list[str]:
    """The frames of ``coro`` and of what it awaits, outermost first (``Task.print_stack`` stops at the
    task's own frame)."""
    lines: list[str] = []
    while coro is not None and len(lines) < 60:
        frame = (
            getattr(coro, "cr_frame", None)
            or getattr(coro, "gi_frame", None)
            or getattr(coro, "ag_frame", None)
        )
        if frame is not None:
            lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        else:
            lines.append(repr(coro))
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )
    return lines


@pytest.fixture
async def _hangdump(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    timeout = float(request.config.getini("timeout") or 0)
    marker = request.node.get_closest_marker("timeout")
    if marker is not None and marker.args:
        timeout = float(marker.args[0])
    if timeout <= MARGIN_S:
        yield
        return
    handle = asyncio.get_running_loop().call_later(timeout - MARGIN_S, _print_tasks, request.node.nodeid)
    try:
        yield
    finally:
        handle.cancel()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
            item.fixturenames.insert(0, "_hangdump")
