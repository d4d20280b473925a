"""``--client-policy``: the load generator runs under the scheduling policy asked for, and wrk still
measures under it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.wrk import CLIENT_POLICIES, ClientPolicy, client_prefix, make_paths, run_wrk, write_script
from tests.ports import free_port

_POLICY = {"other": os.SCHED_OTHER, "batch": os.SCHED_BATCH}
_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


@pytest.mark.parametrize("policy", CLIENT_POLICIES)
def test_the_prefix_runs_a_process_under_the_policy(policy: ClientPolicy) -> None:
    command = [*client_prefix(policy), sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=30).stdout
    assert int(out) == _POLICY[policy]


async def _serve_and_measure(port: int, script: Path) -> int:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")  # wrk's serve GETs carry no body
                writer.write(_ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port)
    async with server:
        result = await asyncio.to_thread(
            run_wrk,
            f"http://127.0.0.1:{port}",
            script,
            duration_s=1,
            connections=2,
            threads=1,
            policy="batch",
        )
    assert result.non_2xx == 0 and result.read_errors == 0
    return result.requests


def test_wrk_measures_under_the_batch_policy(tmp_path: Path) -> None:
    script = write_script(tmp_path / "serve.lua", make_paths(10))
    assert asyncio.run(_serve_and_measure(free_port(), script)) > 0
