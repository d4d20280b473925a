"""The feedback bench's wrk script, run by the real wrk against a recording HTTP server: each thread
(one connection each here) POSTs its own slice of the request ids, in order, with the feedback body."""

from __future__ import annotations

import asyncio
from pathlib import Path

from adserver.feedback import SUCCESS
from bench.feedback_http import BODY, write_feedback_script
from bench.wrk import run_wrk
from tests.ports import free_port

#: The ad server's own 200 answer to a feedback.
_ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b" % (
    len(SUCCESS),
    SUCCESS,
)


async def _record(port: int, script: Path) -> tuple[list[list[tuple[bytes, bytes, bytes]]], int, int]:
    """Every request each connection carried, as (request line, content type, body), and wrk's
    count of requests and of non-2xx answers."""
    connections: list[list[tuple[bytes, bytes, bytes]]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen: list[tuple[bytes, bytes, bytes]] = []
        connections.append(seen)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(b":") for line in lines[1:] if line)
                }
                body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
                seen.append((lines[0], headers.get(b"content-type", b""), body))
                writer.write(_ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    async with server:
        result = await asyncio.to_thread(
            run_wrk, f"http://127.0.0.1:{port}", script, duration_s=1, connections=2, threads=2
        )
    return connections, result.requests, result.non_2xx


def test_each_thread_posts_its_own_slice_in_order(tmp_path: Path) -> None:
    ids = [f"k1.id{i:06d}" for i in range(100_001)]  # an odd count: the last id is in no slice
    script = write_feedback_script(tmp_path / "feedback.lua", ids, threads=2)
    per = len(ids) // 2
    slices = [
        [f"POST /ad/{rid}/feedback HTTP/1.1".encode() for rid in ids[t * per : (t + 1) * per]] for t in (0, 1)
    ]

    connections, requests, non_2xx = asyncio.run(_record(free_port(), script))

    assert requests > 0 and non_2xx == 0
    carried = [c for c in connections if c]
    assert len(carried) == 2, f"expected one connection per wrk thread, got {len(carried)}"
    used: list[int] = []
    for seen in carried:
        # Its thread's slice, from its start: wrk calls its first thread's ``request()`` once before the
        # run to check what it returns, so that thread's first id is spent there.
        t = next((t for t in (0, 1) if seen[0][0] in slices[t][:2]), None)
        assert t is not None, f"{seen[0][0]!r} starts no slice"
        used.append(t)
        expected = slices[t]
        offset = expected.index(seen[0][0])
        assert len(seen) + offset < per, "the run wrapped around its slice: too short a list for this test"
        assert [line for line, _, _ in seen] == expected[offset : offset + len(seen)]  # in order, none twice
        assert {(ctype, body) for _, ctype, body in seen} == {(b"application/json", BODY.encode())}
    assert sorted(used) == [0, 1]  # one slice each
