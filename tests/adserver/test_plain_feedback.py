"""``plain_feedback`` (``adserver.http.direct``): what its one match of a feedback POST's head takes,
httptools parses to the same request and body, and ``feedback_target`` takes directly to the same request
id; anything unusual, or a body not all read yet, is left to httptools. Checked on hand-picked requests
and on thousands of random mutations of a typical one."""

from __future__ import annotations

import pytest

from adserver.http.direct import feedback_target, plain_feedback
from adserver.http.middleware import MAX_BODY_BYTES, MAX_HEADER_COUNT, MAX_TARGET_BYTES
from tests.adserver.test_plain_serve import httptools_reading, mutations

BODY = b'{"view": 1, "click": 1, "acquisition": 0}'
TYPICAL = (
    b"POST /ad/AbCdEf0123-_xyz.QRST/feedback HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: "
    b"application/json\r\nContent-Length: %d\r\nAccept: */*\r\n\r\n" % len(BODY)
) + BODY


def assert_read_alike(request: bytes) -> bool:
    """Whether ``plain_feedback`` matched ``request``; if it did, httptools read the same request (up to
    where the match ends: what follows a body shorter than the bytes after the head is the next request)."""
    found = plain_feedback(request, 0)
    if found is None:
        return False
    end, request_id, body = found
    assert end <= len(request), request
    reading = httptools_reading(request[:end])
    assert reading is not None, request
    parsed, parser = reading
    assert parsed.complete == 1 and parsed.body == body, request
    assert parser.get_method() == b"POST" and parser.get_http_version() == "1.1"
    assert parser.should_keep_alive() and not parser.should_upgrade()
    assert feedback_target(parsed.url, parsed.headers) == request_id, request
    return True


def test_a_typical_request_is_matched_as_httptools_reads_it() -> None:
    assert assert_read_alike(TYPICAL)
    assert assert_read_alike(b"POST /ad/r1/feedback HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}")
    assert assert_read_alike(b"POST /ad/r1/feedback?x=1 HTTP/1.1\r\nCONTENT-LENGTH:\t 0\r\n\r\n")
    assert assert_read_alike(TYPICAL.replace(b"Accept: */*", b"X-Content-Length: 9\r\nExpected: a"))


def test_two_requests_read_together_are_taken_one_after_the_other() -> None:
    first = plain_feedback(TYPICAL * 2, 0)
    assert first is not None and first[0] == len(TYPICAL) and first[2] == BODY
    assert plain_feedback(TYPICAL * 2, first[0]) == (2 * len(TYPICAL), first[1], BODY)


@pytest.mark.parametrize(
    "request_bytes",
    [
        TYPICAL[:-1],  # the body is not all read yet
        TYPICAL[: TYPICAL.index(b"\r\n\r\n") + 2],  # nor the head
        TYPICAL.replace(b"POST", b"PUT"),
        TYPICAL.replace(b"HTTP/1.1", b"HTTP/1.0"),
        TYPICAL.replace(b"/feedback", b"/feedback/"),
        TYPICAL.replace(b"AbCd", b"Ab%43d"),  # escaped segment
        TYPICAL.replace(b"/ad/AbCd", b"/ad/x/AbCd"),  # two segments
        TYPICAL.replace(b"/ad/AbCdEf0123-_xyz.QRST/", b"/ad//"),
        TYPICAL.replace(b"Accept: */*", b"Content-Length: %d" % len(BODY)),  # two lengths
        TYPICAL.replace(b"Content-Length: %d\r\n" % len(BODY), b""),  # none
        TYPICAL.replace(b"Content-Length: %d" % len(BODY), b"Content-Length: %d " % len(BODY)),
        TYPICAL.replace(b"Content-Length: %d" % len(BODY), b"Content-Length: +%d" % len(BODY)),
        TYPICAL.replace(b"Accept: */*", b"Transfer-Encoding: chunked"),
        TYPICAL.replace(b"Accept: */*", b"Connection: keep-alive"),
        TYPICAL.replace(b"Accept: */*", b"expect: 100-continue"),
        TYPICAL.replace(b"Accept: */*", b"Upgrade: h2c"),
        TYPICAL.replace(b"Accept:", b"Accept :"),
        TYPICAL.replace(b"Accept: */*\r\n", b"Accept: a\r\n b\r\n"),  # obs-fold
        TYPICAL.replace(b"/feedback", b"/feedback?q=" + b"a" * MAX_TARGET_BYTES),
        b"POST /ad/r1/feedback HTTP/1.1\r\n" + b"x: y\r\n" * MAX_HEADER_COUNT + b"content-length: 0\r\n\r\n",
        b"POST /ad/r1/feedback HTTP/1.1\r\ncontent-length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1)
        + b"x" * (MAX_BODY_BYTES + 1),
        b"POST http://x/ad/r1/feedback HTTP/1.1\r\ncontent-length: 0\r\n\r\n",
    ],
)
def test_anything_unusual_is_left_to_httptools(request_bytes: bytes) -> None:
    assert plain_feedback(request_bytes, 0) is None


def test_random_mutations_are_matched_only_when_httptools_reads_them_alike() -> None:
    matched = sum(assert_read_alike(request) for request in mutations(TYPICAL))
    assert 500 < matched < 5_000  # both kinds were drawn
