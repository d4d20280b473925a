"""The serve route answered by uvicorn's protocol itself, without the ASGI cycle (issue 18).

A plain ``GET /ad/user/{user_id}/serve`` (no body, HTTP/1.1, within the request limits, nothing in
flight before it on its connection) is the hot path of the whole platform, and at tens of thousands of
requests per second the ASGI machinery around it (a scope dict, a task, the response cycle's header
checks, two send() awaits) cost about as much as the auction. ``adserver.http.protocol`` hands such a
request to ``DirectServe`` from its parser callbacks: the same ``ServeEndpoint`` decides the answer, the
same metrics series times it, and the response bytes are those uvicorn would write for the same
answer (status line, uvicorn's default ``date``/``server`` headers, ``content-type``,
``content-length``, ``retry-after``, ``connection: close`` when the connection ends). Anything else,
HEAD included, goes down the ASGI path, where the same endpoint is also routed.

``POST /ad/{request_id}/feedback`` with a small fixed-length body is answered the same way
(``feedback_target``): the protocol collects the body, hands it to the same ``FeedbackService``
(``submit``: the token and the body are checked at once, an accepted request joins the next batch) and
writes the answer from the future's callback when its batch has the debit and Kafka's acknowledgement.
No task, no scope walk through the middleware; the bytes and the metrics are those of the ASGI path.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Final, cast

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from adserver.http.metrics import RequestMetrics
from adserver.http.middleware import MAX_BODY_BYTES, MAX_HEADER_BYTES, MAX_HEADER_COUNT, MAX_TARGET_BYTES
from adserver.serve import Reply, ServeEndpoint

if TYPE_CHECKING:
    from adserver.feedback_route import FeedbackEndpoint

_PREFIX: Final = b"/ad/user/"
_SUFFIX: Final = b"/serve"
_FEEDBACK_PREFIX: Final = b"/ad/"
_FEEDBACK_SUFFIX: Final = b"/feedback"
_BODY_HEADERS: Final = (b"content-length", b"transfer-encoding")
_JSON: Final = b"content-type: application/json\r\n"
_CLOSE: Final = b"connection: close\r\n"
_LENGTHS: Final = [b"content-length: %d\r\n" % n for n in range(1024)]
#: Answers deferred to the end of a turn of the loop at most (``DirectServe.defer``); past it, they are
#: written at once.
MAX_DEFERRED: Final = 256
#: Starlette's answer (``ServerErrorMiddleware`` and ``adserver.app._server_error``) when the endpoint
#: raises; uvicorn then closes the connection.
ERROR_BODY: Final = b'{"detail":"Internal server error."}'


#: RFC 3986 ``pchar`` without ``%``: unreserved, sub-delims, ``:`` and ``@``.
_PCHAR: Final = rb"A-Za-z0-9\-._~!$&'()*+,;=:@"
#: Header names whose requests the head match leaves to the full parser: a body, the connection's
#: handling (close, upgrade), ``expect`` (any letter case).
_SPECIAL_NAMES: Final = rb"(?i:content-length|transfer-encoding|connection|upgrade|expect)"
#: Header lines of token names and visible-ASCII values, none of them named in ``_SPECIAL_NAMES``.
_ORDINARY_LINES: Final = rb"(?:(?!" + _SPECIAL_NAMES + rb":)[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*\r\n)*"
#: A plain serve GET's whole head, as one match: ``(user_id, query or None, header lines)``. Only what
#: every HTTP/1.1 parser reads the same way: an origin-form target of RFC 3986 characters (an escaped
#: segment, a fragment or anything unusual is not matched), ``HTTP/1.1``, and header lines of token names
#: and visible-ASCII values (no obs-fold, no obs-text, no space before the colon), none of them named in
#: ``_SPECIAL_NAMES`` (a look-ahead at the start of each line: one pass over the head, where a second
#: search of the header lines cost as much as the match itself).
_PLAIN_SERVE: Final = re.compile(
    rb"GET /ad/user/([" + _PCHAR + rb"]+)/serve(?:\?([" + _PCHAR + rb"%/?]*))? HTTP/1\.1\r\n"
    rb"(" + _ORDINARY_LINES + rb")\r\n"
)


#: A plain feedback POST's whole head, as one match: ``(request_id, query or None, lines before, length,
#: lines after)``. As ``_PLAIN_SERVE``, with exactly one ``content-length`` line (any letter case, blanks
#: before its digits, none after them) among the ordinary header lines; no other special name.
_PLAIN_FEEDBACK: Final = re.compile(
    rb"POST /ad/([" + _PCHAR + rb"]+)/feedback(?:\?([" + _PCHAR + rb"%/?]*))? HTTP/1\.1\r\n"
    rb"(" + _ORDINARY_LINES + rb")(?i:content-length):[\t ]*([0-9]{1,9})\r\n(" + _ORDINARY_LINES + rb")\r\n"
)


def plain_feedback(data: bytes, pos: int) -> tuple[int, str, bytes] | None:
    """The plain feedback POST whose whole head and body start ``data`` at ``pos``, as ``(end,
    request_id, body)``, or ``None`` for anything the full parser must read (as ``plain_serve``; and a
    body not all read yet, or over the limit). What it matches, httptools parses to the same method,
    target, headers and body, and ``feedback_target`` takes directly, to the same request id."""
    found = _PLAIN_FEEDBACK.match(data, pos)
    if found is None:
        return None
    request_id, query, before, digits, after = cast(
        "tuple[bytes, bytes | None, bytes, bytes, bytes]", found.groups()
    )
    head_end = found.end()
    end = head_end + int(digits)
    if end - head_end > MAX_BODY_BYTES or end > len(data):
        return None
    # The limits as ``feedback_target`` counts them, or stricter (a line's bytes include ``: `` and CRLF).
    lines = len(before) + len(after) + len(digits) + len(b"content-length: \r\n")
    count = before.count(b"\n") + after.count(b"\n") + 1
    if lines > MAX_HEADER_BYTES or count > MAX_HEADER_COUNT:
        return None
    size = len(_FEEDBACK_PREFIX) + len(request_id) + len(_FEEDBACK_SUFFIX) + (len(query) if query else 0)
    if size > MAX_TARGET_BYTES:
        return None
    return end, request_id.decode("ascii"), data[head_end:end]


def plain_serve(data: bytes, pos: int) -> tuple[int, str, bytes, bytes] | None:
    """The plain serve GET whose whole head starts ``data`` at ``pos``, as ``(end, user_id, query, header
    lines)``, or ``None`` for anything the full parser (httptools, then ``target``) must read: another
    request, an incomplete head, headers that bear on the body or the connection, or a request at a limit
    (414/431). What it matches, httptools parses to the same method, target and headers, and ``target``
    takes directly: a subset of what the full parser's path answers directly, with the same answer."""
    found = _PLAIN_SERVE.match(data, pos)
    if found is None:
        return None
    # One call for the three groups (each ``group`` call is a method call of its own).
    user_id, query, lines = cast("tuple[bytes, bytes | None, bytes]", found.groups())
    if lines and (len(lines) > MAX_HEADER_BYTES or lines.count(b"\n") > MAX_HEADER_COUNT):
        return None
    if query is None:
        query = b""
    if len(user_id) + len(_PREFIX) + len(_SUFFIX) + len(query) > MAX_TARGET_BYTES:
        return None
    return found.end(), user_id.decode("ascii"), query, lines


def header_list(lines: bytes) -> list[tuple[bytes, bytes]]:
    """``plain_serve``'s header lines as uvicorn lists them (as httptools reports them): lower-case
    names, values without the whitespace before them."""
    out: list[tuple[bytes, bytes]] = []
    for line in lines.split(b"\r\n")[:-1]:
        name, _, value = line.partition(b":")
        out.append((name.lower(), value.lstrip(b" \t")))
    return out


def _segment(
    url: bytes, prefix: bytes, suffix: bytes, headers: list[tuple[bytes, bytes]]
) -> tuple[bytes, bytes] | None:
    """``(segment, query)`` of an origin-form ``prefix<segment>suffix[?query]`` target, or ``None`` for
    what the direct path leaves to the ASGI path: another route, a fragment (which httptools would strip),
    an escaped (``%``) or non-ASCII path, a segment with a ``/``, a target or a header count over the
    limits (414/431)."""
    if not url.startswith(prefix) or b"#" in url:  # also every absolute-form target
        return None
    # As httptools.parse_url splits an origin-form target, without its C call and result object.
    path, _, query = url.partition(b"?")
    if not path.endswith(suffix) or b"%" in path or not path.isascii():
        return None
    if len(path) + len(query) > MAX_TARGET_BYTES or len(headers) > MAX_HEADER_COUNT:
        return None
    segment = path[len(prefix) : -len(suffix)]
    if not segment or b"/" in segment:
        return None
    return segment, query


def target(url: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[str, bytes] | None:
    """``(user_id, query)`` when the request may be answered directly, else ``None`` (the ASGI path).

    Leaves to the ASGI path what any middleware there would act on or what the route would not match
    (``_segment``), headers over their size limit (431), and a body."""
    found = _segment(url, _PREFIX, _SUFFIX, headers)
    if found is None:
        return None
    size = 0
    for name, value in headers:
        if name in _BODY_HEADERS:
            return None
        size += len(name) + len(value)
    if size > MAX_HEADER_BYTES:
        return None
    user_id, query = found
    return user_id.decode("ascii"), query


def feedback_target(url: bytes, headers: list[tuple[bytes, bytes]]) -> str | None:
    """The ``request_id`` of a feedback POST that may be answered directly, else ``None``.

    As the ASGI fast path (``adserver.http.fastpath``) takes it: one segment between ``/ad/`` and
    ``/feedback``, one ``content-length`` within the body limit and no ``transfer-encoding`` (so the
    body-limit middleware would pass it untouched); and, as ``target``, nothing a middleware would answer
    (``_segment``; headers over their size limit)."""
    found = _segment(url, _FEEDBACK_PREFIX, _FEEDBACK_SUFFIX, headers)
    if found is None:
        return None
    size = 0
    length = -1
    for name, value in headers:
        if name == b"content-length":
            if length >= 0 or not value.isdigit():
                return None
            length = int(value)
        elif name == b"transfer-encoding":
            return None
        size += len(name) + len(value)
    if size > MAX_HEADER_BYTES or not 0 <= length <= MAX_BODY_BYTES:
        return None
    return found[0].decode("ascii")


class DirectServe:
    """The serve endpoint (and the feedback endpoint, when given) and their metrics, as the protocol's
    direct path uses them; set on the app's state (``app.state.direct_serve``) by
    ``adserver.app.create_app``.

    It also holds the answers of the loop's current turn (``defer``): the head match answers every
    request read in one turn of the event loop, and their bytes are written together once the turn's
    reads are done (``flush``, scheduled with ``call_soon``), each answer still one write. A client
    then finds its answers ready together instead of being woken for each: measured 1.35x requests/s
    (BENCHMARKS.md, 2026-12-05). Whatever else writes to a connection or closes it first flushes."""

    __slots__ = ("_defaults", "_heads", "_out", "feedback", "metrics", "serve")

    def __init__(
        self, serve: ServeEndpoint, metrics: RequestMetrics, feedback: FeedbackEndpoint | None = None
    ) -> None:
        self.serve = serve
        self.metrics = metrics
        self.feedback = feedback
        self._defaults: list[tuple[bytes, bytes]] | None = None
        self._heads: dict[int, bytes] = {}
        self._out: list[tuple[asyncio.Transport, bytes]] = []

    def defer(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, data: bytes) -> None:
        """Write ``data`` to ``transport`` at the end of this turn of the loop, after the answers deferred
        before it (in order)."""
        out = self._out
        if not out:
            loop.call_soon(self.flush)
        elif len(out) >= MAX_DEFERRED:  # a bound on what waits (and on what flow control has not seen yet)
            self.flush()  # the flush already scheduled writes what is deferred after this
        self._out.append((transport, data))

    def flush(self) -> None:
        """Write every deferred answer now, in order (one write each; a connection closed meanwhile
        gets nothing, as a write after its close)."""
        out = self._out
        if out:
            self._out = []
            for transport, data in out:
                if not transport.is_closing():
                    transport.write(data)

    def encode(self, reply: Reply, keep_alive: bool, defaults: list[tuple[bytes, bytes]]) -> bytes:
        """The response uvicorn writes for ``send_json(reply)``: head and body, one buffer."""
        return self.encode_raw(reply.status, reply.body, reply.retry_after_s, keep_alive, defaults)

    def encode_raw(
        self,
        status: int,
        body: bytes,
        retry_after_s: int | None,
        keep_alive: bool,
        defaults: list[tuple[bytes, bytes]],
    ) -> bytes:
        # uvicorn replaces its default headers (a new ``date``) once a second: the heads are cached per list.
        if defaults is not self._defaults:
            self._defaults = defaults
            self._heads = {}
        head = self._heads.get(status)
        if head is None:
            head = self._heads[status] = (
                STATUS_LINE[status]
                + b"".join(name + b": " + value + b"\r\n" for name, value in defaults)
                + _JSON
            )
        n = len(body)
        parts = [head, _LENGTHS[n] if n < 1024 else b"content-length: %d\r\n" % n]
        if retry_after_s is not None:
            parts.append(b"retry-after: %d\r\n" % retry_after_s)
        if not keep_alive:
            parts.append(_CLOSE)
        parts.append(b"\r\n")
        parts.append(body)
        return b"".join(parts)


def direct_of(app: object) -> DirectServe | None:
    """The ``DirectServe`` of the ad-server app under uvicorn's wrappers (proxy headers, logging), if any."""
    for _ in range(8):
        found = getattr(getattr(app, "state", None), "direct_serve", None)
        if isinstance(found, DirectServe):
            return found
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None
