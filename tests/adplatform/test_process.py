"""``adplatform.process``: the one logging setup and running until signalled."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time

import pytest

from adplatform.process import configure_logging, interrupt_on_signals, logging_config, run_until_signalled


class Service:
    """A service loop that runs until its stop event is set, like the consumers' ``run``."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> str:
        await self.stopping.wait()
        return "stopped"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_sets_the_stop_event_and_the_loop_returns(sig: signal.Signals) -> None:
    service = Service()
    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), sig)
    assert await asyncio.wait_for(run_until_signalled(service.run(), service.stop), 5) == "stopped"
    # The handlers are removed afterwards: the default disposition is back.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_interrupts_a_blocking_front_end_even_when_it_inherited_sigint_ignored(
    sig: signal.Signals,
) -> None:
    before_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell leaves a background job
    try:
        with pytest.raises(KeyboardInterrupt), interrupt_on_signals():
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler interrupts this at once
            pytest.fail("the signal did not interrupt")
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # the earlier handlers are back
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before_int)


async def test_the_timeout_stops_the_loop() -> None:
    service = Service()
    result = await asyncio.wait_for(run_until_signalled(service.run(), service.stop, timeout_s=0.05), 5)
    assert result == "stopped"


async def test_a_loop_that_ends_by_itself_returns_before_the_timeout() -> None:
    async def run() -> int:
        return 7

    assert await run_until_signalled(run(), lambda: None, timeout_s=60) == 7


@pytest.mark.parametrize(("level", "kafka"), [("DEBUG", logging.WARNING), ("INFO", logging.WARNING),
                                              ("ERROR", logging.ERROR)])  # fmt: skip
def test_one_logging_setup_quiets_aiokafka_to_warning(level: str, kafka: int) -> None:
    config = logging_config(level)
    assert config["root"]["level"] == level
    assert config["loggers"]["aiokafka"]["level"] == kafka


def test_configure_logging_applies_the_setup() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("aiokafka").level
    try:
        configure_logging("ERROR")
        assert root.level == logging.ERROR and logging.getLogger("aiokafka").level == logging.ERROR
        assert any(isinstance(h, logging.StreamHandler) for h in root.handlers)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("aiokafka").setLevel(saved[2])
