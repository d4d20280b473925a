"""The raw protocol reference (``bench.minimal_protocol``) answers every request head it reads, however
the bytes arrive, with the fixed answer, from each of its workers; and stops with its workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from bench.minimal_protocol import BODY, MAX_HEAD_BYTES, FixedAnswer, answer
from tests.adserver.serving import Recorder
from tests.ports import free_port

_GET = b"GET /ad/user/u1/serve?device_type=iPhone HTTP/1.1\r\nhost: x\r\n\r\n"


def _connected() -> tuple[FixedAnswer, Recorder]:
    protocol, transport = FixedAnswer(b"A"), Recorder()
    protocol.connection_made(transport)  # type: ignore[arg-type]  # what the protocol calls of a transport
    return protocol, transport


def test_an_answer_per_head_however_the_bytes_arrive() -> None:
    protocol, transport = _connected()
    protocol.data_received(_GET + _GET[:10])  # one head and the start of another
    protocol.data_received(_GET[10:-2])
    assert transport.writes == [b"A"]
    protocol.data_received(_GET[-2:] + _GET)
    assert transport.writes == [b"A", b"A", b"A"]


def test_a_head_that_never_ends_closes_the_connection() -> None:
    protocol, transport = _connected()
    protocol.data_received(b"GET /" + b"a" * MAX_HEAD_BYTES)
    assert transport.closed and transport.writes == []


def test_the_answer_is_uvicorns_head_and_the_typical_body() -> None:
    head, _, body = answer().partition(b"\r\n\r\n")
    assert body == BODY
    assert head.startswith(b"HTTP/1.1 200 OK\r\ndate: ")
    assert f"content-length: {len(BODY)}".encode() in head


def test_the_server_answers_from_its_workers_and_stops_with_them() -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.minimal_protocol", str(port), "2"])
    workers: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "the reference never listened"
                time.sleep(0.05)
        with conn:
            conn.sendall(_GET * 3)
            # Three answers of the reference's length (its body's request_id is sealed with a random
            # nonce in each process, so only the length is the same here).
            size = len(answer())
            received = b""
            while len(received) < 3 * size:
                chunk = conn.recv(65536)
                assert chunk, "closed before three answers"
                received += chunk
        answers = [received[i * size : (i + 1) * size] for i in range(3)]
        assert len(received) == 3 * size
        for one in answers:
            head, _, body = one.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n") and len(body) == len(BODY)
        workers = subprocess.run(
            ["pgrep", "-P", str(server.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(workers) == 2
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}")  # stopped and reaped by the server
