"""``plain_serve`` (``adserver.http.direct``): what its one match of a head takes, httptools parses to the
same request, and ``target`` takes directly to the same user and query; anything unusual is left to
httptools. Checked on hand-picked heads and on thousands of random mutations of a typical one."""

from __future__ import annotations

import random
from collections.abc import Iterator

import httptools
import pytest

from adserver.http.direct import header_list, plain_serve, target
from adserver.http.middleware import MAX_HEADER_COUNT, MAX_TARGET_BYTES

TYPICAL = (
    b"GET /ad/user/9f2c4e1a7b3d5f60-123/serve?device_type=Android+Mobile&city=Mumbai&state=Maharashtra"
    b"&age=34&gender=F HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: sim/1.0\r\nAccept: */*\r\n\r\n"
)


class _Parsed:
    """What httptools reports of one request, as uvicorn records it."""

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = 0
        self.body = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete += 1


def httptools_reading(head: bytes) -> tuple[_Parsed, httptools.HttpRequestParser] | None:
    parsed = _Parsed()
    parser = httptools.HttpRequestParser(parsed)
    try:
        parser.feed_data(head)
    except httptools.HttpParserError:
        return None
    return parsed, parser


def assert_read_alike(head: bytes) -> bool:
    """Whether ``plain_serve`` matched ``head``; if it did, httptools read the same request."""
    found = plain_serve(head + b"GET /next", 0)
    if found is None:
        return False
    end, user_id, query, lines = found
    assert end == len(head)
    reading = httptools_reading(head)
    assert reading is not None, head
    parsed, parser = reading
    assert parsed.complete == 1 and parsed.body == b""
    assert parser.get_method() == b"GET" and parser.get_http_version() == "1.1"
    assert parser.should_keep_alive() and not parser.should_upgrade()
    assert header_list(lines) == parsed.headers, head
    assert target(parsed.url, parsed.headers) == (user_id, query), head
    return True


def test_a_typical_head_is_matched_as_httptools_reads_it() -> None:
    assert assert_read_alike(TYPICAL)
    assert assert_read_alike(b"GET /ad/user/u1/serve HTTP/1.1\r\n\r\n")
    assert assert_read_alike(b"GET /ad/user/u1/serve? HTTP/1.1\r\nx-a:\r\nx-b: \t v \t\r\n\r\n")
    assert assert_read_alike(b"GET /ad/user/u1/serve?a=%2F?b=/c HTTP/1.1\r\nhost: x\r\n\r\n")
    # Names that only contain or extend a special one are ordinary headers.
    assert assert_read_alike(
        TYPICAL.replace(b"Accept: */*", b"X-Connection: close\r\nUpgrades: 1\r\nExpected: a")
    )


@pytest.mark.parametrize(
    "head",
    [
        TYPICAL[:-2],  # incomplete
        TYPICAL.replace(b"GET", b"HEAD"),
        TYPICAL.replace(b"HTTP/1.1", b"HTTP/1.0"),
        TYPICAL.replace(b"/serve?", b"/serve/?"),
        TYPICAL.replace(b"9f2c", b"9%2c"),  # escaped segment
        TYPICAL.replace(b"&age=34", b"#frag"),
        TYPICAL.replace(b"Mumbai", "Mumbaï".encode()),
        TYPICAL.replace(b"Accept:", b"Accept :"),
        TYPICAL.replace(b"sim/1.0", "sim/ü".encode()),
        TYPICAL.replace(b"Accept: */*\r\n", b"Accept: a\r\n b\r\n"),  # obs-fold
        TYPICAL.replace(b"Accept: */*", b"Connection: keep-alive"),
        TYPICAL.replace(b"Accept: */*", b"connection: close"),
        TYPICAL.replace(b"Accept: */*", b"Content-Length: 0"),
        TYPICAL.replace(b"Accept: */*", b"Transfer-Encoding: chunked"),
        TYPICAL.replace(b"Accept: */*", b"Expect: 100-continue"),
        TYPICAL.replace(b"Accept: */*", b"Upgrade: websocket"),
        TYPICAL.replace(b"Accept: */*", b"Accept: */*\r\nCONTENT-LENGTH: 0"),  # any case, any line
        TYPICAL.replace(b"Accept: */*", b"Accept: */*\r\ntransfer-encoding: chunked"),
        TYPICAL.replace(b"age=34", b"q=" + b"a" * MAX_TARGET_BYTES),
        b"GET /ad/user/u1/serve HTTP/1.1\r\n" + b"x: y\r\n" * (MAX_HEADER_COUNT + 1) + b"\r\n",
        b"GET /ad/user//serve HTTP/1.1\r\n\r\n",
        b"GET http://x/ad/user/u1/serve HTTP/1.1\r\n\r\n",
        b"POST /ad/user/u1/serve HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
    ],
)
def test_anything_unusual_is_left_to_httptools(head: bytes) -> None:
    assert plain_serve(head, 0) is None


def mutations(typical: bytes, count: int = 5_000) -> Iterator[bytes]:
    """``count`` copies of ``typical``, each with one to three bytes replaced, inserted or deleted (bytes
    that matter to an HTTP parser, and some it refuses), always drawn alike."""
    rng = random.Random(18)
    alphabet = b" \t\r\n:/?#%&=+-._~!$'()*,;@[]\"<>\\^`{|}\x00\x7f\x80\xffAaZz09"
    for _ in range(count):
        mutated = bytearray(typical)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(mutated))
            op = rng.random()
            if op < 0.4:
                mutated[at] = rng.choice(alphabet)
            elif op < 0.7:
                mutated.insert(at, rng.choice(alphabet))
            else:
                del mutated[at]
        yield bytes(mutated)


def test_random_mutations_are_matched_only_when_httptools_reads_them_alike() -> None:
    matched = sum(assert_read_alike(head) for head in mutations(TYPICAL))
    assert 500 < matched < 5_000  # both kinds were drawn
