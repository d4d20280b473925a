"""What every long-running process shares: one logging setup, and running until SIGTERM or SIGINT.

Only entry points call these (the CLI's commands, the ad server's workers through uvicorn or granian,
``python -m archive.feedback_writer``); library code only does ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import signal
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import Any, Final, TypeVar

T = TypeVar("T")

#: The signals that ask a process to stop: SIGTERM (supervisors, ``kill``) and SIGINT (Ctrl-C).
STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
#: The pid tells apart the ad server's workers and the demo's processes writing to one terminal.
LOG_FORMAT: Final = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


def logging_config(level: str) -> dict[str, Any]:
    """The one logging setup, as a ``dictConfig`` (the form uvicorn and granian take): every logger to
    stderr at ``level``, aiokafka at WARNING or above (it logs every retry at INFO)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {"aiokafka": {"level": max(logging.WARNING, logging.getLevelName(level))}},
    }


def configure_logging(level: str) -> None:
    """Apply ``logging_config(level)`` to this process."""
    logging.config.dictConfig(logging_config(level))


@contextlib.contextmanager
def stop_on_signals(stop: Callable[[], object]) -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT call ``stop`` (which sets the process's stop event) instead of
    killing the process, so it finishes its current step and returns. Needs a running event loop."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise ``KeyboardInterrupt`` in the main thread, for a front end
    that runs until Ctrl-C (the live demo) and stops in order when it comes: SIGINT even when the process
    inherited it ignored (a shell starts a background job so, and Python then leaves it ignored), SIGTERM
    from ``kill`` or a closing session. The earlier handlers are back afterwards."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    before = {sig: signal.signal(sig, interrupt) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


async def run_until_signalled(
    run: Awaitable[T], stop: Callable[[], object], *, timeout_s: float | None = None
) -> T:
    """Await ``run`` (a service's loop); SIGTERM, SIGINT or ``timeout_s`` seconds call ``stop``, after which
    ``run`` is expected to return soon. Returns what ``run`` returns."""
    with stop_on_signals(stop):
        task = asyncio.ensure_future(run)
        if timeout_s is not None:
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
            if not done:
                stop()
        return await task
