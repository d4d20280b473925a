"""uvicorn's httptools protocol with a deadline on reading each request: slow clients get 408.

uvicorn times out idle keep-alive connections, but any byte cancels that timer, and nothing bounds how
long a request's head or body may take to arrive: a client that connects and sends nothing, or sends a
header byte every few seconds, or announces a body and dribbles it (slowloris), holds a connection and
its buffers for as long as it likes. ``GuardedHttpToolsProtocol`` sets a read deadline when a connection
is made and when each request's first byte arrives, and clears it when the request is complete (one
timer per connection follows the deadline, rather than a timer per request). If it passes, the client
gets ``408 Request Timeout`` (when no response has started) and the connection is closed; an application
still waiting for the body sees ``http.disconnect``.

The deadline is ``ADP_CLIENT_TIMEOUT_S`` (default 10 s), read from the environment once per worker.
Granian enforces the same bound on request heads with its ``header_read_timeout``; see
``adserver.http.server``.

It also writes each response in one piece: uvicorn writes a response's head when the app starts it and
the body when the app sends it, two send(2) calls for every small JSON answer. Each request's cycle
writes through ``_HeadWithBody``, which holds the head until the first body bytes (measured: the
minimal app from about 25,000 to 30,000 requests/s, feedback +10%).

And it answers a plain serve GET itself, from its parser callbacks, without the ASGI cycle
(``adserver.http.direct``: the same endpoint, metrics and response bytes; the same read deadline,
keep-alive timer and request count). A serve request whose auction must ask the frequency-cap store
continues as an ordinary uvicorn cycle, so later pipelined requests still wait their turn.

Most serve GETs never reach httptools' callbacks: when the parser holds no partial request,
``data_received`` matches each plain serve GET at the start of the bytes read in one regular expression
(``adserver.http.direct.plain_serve``: only heads every HTTP/1.1 parser reads alike, checked against
httptools on thousands of random heads) and answers it directly; from the first byte that is anything
else, httptools reads the rest as before. Those answers are written together at the end of the loop's
turn (``DirectServe.defer``), each still one write, so a client finds them ready at once; anything else
that writes to a connection or closes it writes them first. And uvicorn's keep-alive timeout keeps one
timer per connection, moved by each answer, where uvicorn makes and cancels one per request.

A feedback POST with a small fixed-length body is answered directly too: its body is collected here (or,
when its whole head and body are at the start of the bytes read, taken from one match of the head,
``adserver.http.direct.plain_feedback``, as a serve GET's is), ``FeedbackService.submit`` takes it, and
the answer is written from the callback of the request's future. Until then the connection holds a
response cycle of uvicorn's that is not complete, exactly as an ASGI request in flight does: later
pipelined requests queue behind it, a graceful shutdown lets it finish and then closes the connection,
and a client that goes away gets nothing written.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from adplatform.config import load_config
from adserver.feedback import FeedbackError
from adserver.feedback_route import NOT_READY
from adserver.http.direct import (
    ERROR_BODY,
    DirectServe,
    direct_of,
    feedback_target,
    header_list,
    plain_feedback,
    plain_serve,
    target,
)
from adserver.http.fastpath import FEEDBACK_ROUTE, SERVE_ROUTE
from adserver.http.respond import send_json
from adserver.serve import CapWait

logger = logging.getLogger(__name__)

_BODY_408 = b'{"detail":"Request not received in time."}'
_RESPONSE_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(_BODY_408)).encode() + b"\r\nconnection: close\r\n\r\n" + _BODY_408
)


@functools.cache
def client_timeout_s() -> float:
    """This worker's deadline (the environment is read once, in the worker)."""
    return float(load_config().client_timeout_s)


class _HeadWithBody:
    """A response cycle's view of the transport: the head is held and written with the first body
    bytes, one send(2) per response instead of two. Informational (1xx) writes go through at once;
    closing writes a held head first."""

    __slots__ = ("_head", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if not self._started and not data.startswith(b"HTTP/1.1 1"):
            self._started = True
            self._head = data
            return
        head = self._head
        if head is not None:
            self._head = None
            data = head + data
        self._transport.write(data)

    def writelines(self, chunks: Iterable[bytes]) -> None:
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        if self._head is not None:
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # anything else a later uvicorn may call: the transport's
        return getattr(self._transport, name)


class _NoWaiter:
    """Stands for a cycle's ``message_event``: nothing waits on a direct feedback's cycle."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_WAITER = _NoWaiter()


class _FeedbackInFlight:
    """What uvicorn reads of a connection's cycle (``self.cycle``) while a direct feedback's answer is
    pending: not complete, so pipelined requests queue behind it and a graceful shutdown turns its
    ``keep_alive`` off instead of closing; ``disconnected`` once the client has gone. A full
    ``RequestResponseCycle`` with its ``asyncio.Event`` cost 1.9 us per request, this 0.25."""

    __slots__ = ("disconnected", "keep_alive", "message_event", "response_complete", "response_started")

    def __init__(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        self.response_started = False
        self.response_complete = False
        self.disconnected = False
        self.message_event = _NO_WAITER


class _Deadline:
    """A deadline on the loop followed by at most one timer. Setting it moves ``at`` and clearing it is
    ``at = None``; the timer, when it fires before a deadline moved later, waits again, and when it finds
    none does nothing: one timer per connection per deadline's length, not a ``call_later`` and a
    ``cancel`` per request (1.1-1.2 us of each)."""

    __slots__ = ("_expired", "_loop", "_timer", "at")

    def __init__(self, loop: asyncio.AbstractEventLoop, expired: Callable[[], None]) -> None:
        self._loop = loop
        self._expired = expired
        self._timer: asyncio.TimerHandle | None = None
        #: When it expires (loop time); None when cleared.
        self.at: float | None = None

    def set(self, delay_s: float) -> None:
        at = self.at = self._loop.time() + delay_s
        if self._timer is None:
            self._timer = self._loop.call_at(at, self._fired)

    def cancel(self) -> None:
        self.at = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fired(self) -> None:
        self._timer = None
        at = self.at
        if at is None:
            return
        if self._loop.time() < at:  # moved since this timer was set: wait for the rest
            self._timer = self._loop.call_at(at, self._fired)
            return
        self.at = None
        self._expired()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` plus the request-read deadline and the serve route's direct answer
    (``adserver.http.direct``); everything else is uvicorn's own."""

    #: When the request being read times out (cleared when no request is being read), and when an idle
    #: keep-alive connection is closed; set in ``connection_made``.
    _read: _Deadline
    _idle: _Deadline
    _head_done: bool = False
    _direct: DirectServe | None = None
    #: The direct request being read: (user_id, query, keep-alive).
    _pending: tuple[str, bytes, bool] | None = None
    #: The direct feedback request whose body is being read: (request_id, keep-alive), and the body so far.
    _feedback: tuple[str, bool] | None = None
    _feedback_body: bytes = b""
    #: Between httptools' ``on_message_begin`` and ``on_message_complete``: the parser holds a request.
    _in_message: bool = False
    #: Plain serve GETs may be matched before httptools sees them (``data_received``): a direct path,
    #: set up as ``_take_direct`` requires.
    _heads: bool = False
    #: And plain feedback POSTs (``plain_feedback``): the direct path answers feedback too.
    _direct_feedback: bool = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read = _Deadline(self.loop, self._read_timed_out)
        self._idle = _Deadline(self.loop, self.timeout_keep_alive_handler)
        super().connection_made(transport)
        self._direct = direct_of(self.app)
        self._heads = (
            self._direct is not None
            and self.limit_concurrency is None
            and not self.root_path
            and not self.access_log
        )
        self._direct_feedback = self._heads and self._direct is not None and self._direct.feedback is not None
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Plain serve GETs and feedback POSTs at the start of ``data`` are answered from one match of
        their head (``adserver.http.direct.plain_serve``, ``plain_feedback``), without httptools'
        callbacks; the rest, from the first byte that is not such a request, goes to httptools as before."""
        direct = self._direct
        if direct is None:
            super().data_received(data)
            return
        if self._heads and not self._in_message:
            pos = self._answer_heads(data)
            if pos:
                if pos == len(data) or self.transport.is_closing():  # closed after a 500: nothing more
                    return
                data = data[pos:]
        # httptools' path writes at once (a 400, the direct answers of its callbacks): after what is deferred.
        direct.flush()
        super().data_received(data)

    def _answer_heads(self, data: bytes) -> int:
        """Answer the plain serve GETs and feedback POSTs at the start of ``data``, while the connection is
        as ``_take_direct`` requires; returns where the first request left to httptools starts."""
        direct = self._direct
        assert direct is not None  # _heads is only set when it is
        pos = 0
        end = len(data)
        while pos < end:
            cycle = self.cycle
            if (
                (cycle is not None and not cycle.response_complete)
                or self.flow.write_paused
                or self.pipeline
                or self.transport.is_closing()
            ):
                return pos
            found = plain_serve(data, pos)
            if found is None:
                if self._direct_feedback and data.startswith(b"POST ", pos):
                    posted = plain_feedback(data, pos)
                    if posted is not None:
                        pos, request_id, body = posted
                        self._idle.at = None  # as below
                        self._read.at = None
                        direct.flush()  # its answer may be written at once: after those deferred before
                        self._answer_feedback(request_id, True, body)
                        continue
                return pos
            pos, user_id, query, lines = found
            # What httptools' on_message_begin and uvicorn do (``_unset_keepalive_if_required``), and the
            # request is complete: no read deadline (``_disarm``); inline, as this runs for every request.
            self._idle.at = None
            self._read.at = None
            self._answer(user_id, query, True, lines)
        return pos

    def connection_lost(self, exc: Exception | None) -> None:
        self._read.cancel()
        self._idle.cancel()
        super().connection_lost(exc)

    # uvicorn's keep-alive timeout on the connection's one idle deadline: uvicorn makes a timer for each
    # response and cancels it at the next request's first bytes; here a response moves the deadline.
    def _unset_keepalive_if_required(self) -> None:
        self._idle.at = None

    def on_response_complete(self) -> None:
        """uvicorn's (request count, reading resumed, the next pipelined request started, else the
        keep-alive deadline set), with the keep-alive deadline on the connection's one idle timer."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle.at = None
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle.set(self.timeout_keep_alive)

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown, after the answers deferred in this turn are written."""
        if self._direct is not None:
            self._direct.flush()
        super().shutdown()

    def on_message_begin(self) -> None:
        self._in_message = True
        super().on_message_begin()
        # A request on a connection whose previous answer armed the keep-alive timer (an answer written
        # while later pipelined bytes were being parsed): the connection is not idle any more.
        self._unset_keepalive_if_required()
        self._head_done = False
        if self._read.at is None:  # on a new connection the deadline runs from connection_made
            self._arm()

    def on_headers_complete(self) -> None:
        self._head_done = True
        direct = self._direct
        if direct is not None and self._take_direct(direct):
            return
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle is before:  # no new request cycle (an upgrade, say)
            return
        if cycle.scope["method"] != "HEAD":  # a HEAD response writes no body after its head
            cycle.transport = _HeadWithBody(self.transport)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        if self._feedback is not None:  # at most MAX_BODY_BYTES (feedback_target): no flow control
            self._feedback_body += body
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._disarm()
        pending = self._pending
        if pending is not None:
            self._pending = None
            self._answer(*pending)
            return
        feedback = self._feedback
        if feedback is not None:
            body, self._feedback, self._feedback_body = self._feedback_body, None, b""
            self._answer_feedback(feedback[0], feedback[1], body)
            return
        super().on_message_complete()

    def _take_direct(self, direct: DirectServe) -> bool:
        """Whether this request is answered directly (``adserver.http.direct``): a plain serve GET or a
        feedback POST with a small fixed-length body, on HTTP/1.1 while nothing else is in flight on the
        connection (uvicorn's pipeline keeps the order of the rest), the client reading its answers, and
        uvicorn set up as ``adserver.http.server`` runs it."""
        parser = self.parser
        cycle = self.cycle
        method = parser.get_method()
        if (
            (method != b"GET" and method != b"POST")
            or parser.get_http_version() != "1.1"
            or self.expect_100_continue
            or parser.should_upgrade()
            or (cycle is not None and not cycle.response_complete)
            or self.flow.write_paused
            or self.limit_concurrency is not None
            or self.root_path
            or self.access_log
        ):
            return False
        if method == b"POST":
            if direct.feedback is None:
                return False
            request_id = feedback_target(self.url, self.headers)
            if request_id is None:
                return False
            self._feedback = (request_id, parser.should_keep_alive())
            self._feedback_body = b""
            return True
        found = target(self.url, self.headers)
        if found is None:
            return False
        self._pending = (found[0], found[1], parser.should_keep_alive())
        return True

    def _answer(self, user_id: str, query: bytes, keep_alive: bool, lines: bytes | None = None) -> None:
        """Answer a direct serve request; ``lines``: its header lines when httptools did not read it
        (``_answer_heads``), for the scope of a cycle that finishes the auction."""
        direct = self._direct
        assert direct is not None  # _pending is only set when it is
        started = time.perf_counter()
        try:
            reply = direct.serve.begin(user_id, query)
        except Exception:  # the top-level guard ServerErrorMiddleware is on the ASGI path
            logger.exception("Exception in the serve route (direct path)")
            direct.metrics.observe(SERVE_ROUTE, 500, time.perf_counter() - started)
            direct.flush()
            self.transport.write(
                direct.encode_raw(500, ERROR_BODY, None, True, self.server_state.default_headers)
            )
            self.on_response_complete()
            self.transport.close()  # as uvicorn does after an app fails with its answer sent
            return
        if isinstance(reply, CapWait):
            if lines is not None:  # read by plain_serve: the scope httptools' callbacks would have made
                HttpToolsProtocol.on_message_begin(self)  # uvicorn's own: url, headers, scope
                self.headers.extend(header_list(lines))
            self._finish_in_cycle(direct, reply, user_id, query, keep_alive, started)
            return
        data = direct.encode(reply, keep_alive, self.server_state.default_headers)
        if lines is not None and keep_alive:  # read by the head match: written with the turn's answers
            direct.defer(self.loop, self.transport, data)
        else:
            direct.flush()
            self.transport.write(data)
        direct.metrics.observe(SERVE_ROUTE, reply.status, time.perf_counter() - started)
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()  # uvicorn's bookkeeping: request count, keep-alive timer
        direct.serve.after(reply)

    def _answer_feedback(self, request_id: str, keep_alive: bool, body: bytes) -> None:
        """Submit a feedback request; answer now if it is refused up front (404/422/503 not ready),
        else from its future's callback (``_feedback_done``), with a cycle of uvicorn's held meanwhile."""
        direct = self._direct
        assert direct is not None and direct.feedback is not None  # _feedback is only set when they are
        started = time.perf_counter()
        service = direct.feedback.service
        if service is None:
            self._write_feedback(direct, 503, NOT_READY, 1, keep_alive, started)
            return
        try:
            future = service.submit(request_id, body)
        except FeedbackError as exc:
            retry_after_s = 1 if exc.status == 503 else None
            self._write_feedback(direct, exc.status, exc.body, retry_after_s, keep_alive, started)
            return
        except Exception:  # the top-level guard ServerErrorMiddleware is on the ASGI path
            logger.exception("Exception in the feedback route (direct path)")
            self._feedback_failed(direct, started)
            return
        cycle = _FeedbackInFlight(keep_alive)
        # In flight: later pipelined requests queue behind it, a graceful shutdown waits for it.
        self.cycle = cycle  # type: ignore[assignment]  # what uvicorn reads of a cycle (see the class)
        future.add_done_callback(functools.partial(self._feedback_done, direct, cycle, started))

    def _feedback_done(
        self, direct: DirectServe, cycle: _FeedbackInFlight, started: float, future: asyncio.Future[bytes]
    ) -> None:
        """The batch settled the request: write its answer (unless its client has gone), as the ASGI
        path's ``send_json`` would."""
        exc = None if future.cancelled() else future.exception()
        if future.cancelled() or (exc is not None and not isinstance(exc, FeedbackError)):
            if exc is not None:
                logger.error("Exception in the feedback route (direct path)", exc_info=exc)
            if cycle.disconnected or self.transport.is_closing():
                direct.metrics.observe(FEEDBACK_ROUTE, 500, time.perf_counter() - started)
                return
            cycle.response_started = cycle.response_complete = True
            self._feedback_failed(direct, started)
            return
        if exc is None:
            status, body, retry_after_s = 200, future.result(), None
        else:
            assert isinstance(exc, FeedbackError)
            status, body = exc.status, exc.body
            retry_after_s = 1 if status == 503 else None
        if cycle.disconnected or self.transport.is_closing():  # as uvicorn's send(): nothing written
            direct.metrics.observe(FEEDBACK_ROUTE, status, time.perf_counter() - started)
            return
        cycle.response_started = cycle.response_complete = True
        # ``keep_alive`` of the cycle: a graceful shutdown meanwhile turned it off.
        self._write_feedback(direct, status, body, retry_after_s, cycle.keep_alive, started)

    def _write_feedback(
        self,
        direct: DirectServe,
        status: int,
        body: bytes,
        retry_after_s: int | None,
        keep_alive: bool,
        started: float,
    ) -> None:
        self.transport.write(
            direct.encode_raw(status, body, retry_after_s, keep_alive, self.server_state.default_headers)
        )
        direct.metrics.observe(FEEDBACK_ROUTE, status, time.perf_counter() - started)
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()  # uvicorn's bookkeeping: request count, keep-alive timer, pipeline

    def _feedback_failed(self, direct: DirectServe, started: float) -> None:
        """A bug: 500, and the connection closed (as uvicorn does after an app fails with its answer sent)."""
        direct.metrics.observe(FEEDBACK_ROUTE, 500, time.perf_counter() - started)
        self.transport.write(
            direct.encode_raw(500, ERROR_BODY, None, True, self.server_state.default_headers)
        )
        self.on_response_complete()
        self.transport.close()

    def _finish_in_cycle(
        self, direct: DirectServe, wait: CapWait, user_id: str, query: bytes, keep_alive: bool, started: float
    ) -> None:
        """The auction waits for the cap store: the rest runs as an ASGI cycle of uvicorn's (its task,
        its response writing, later pipelined requests queued behind it)."""

        async def finish(scope: Scope, receive: Receive, send: Send) -> None:
            status = 500
            try:
                reply = await direct.serve.finish(wait)
                status = reply.status
                await send_json(send, reply.status, reply.body, retry_after_s=reply.retry_after_s)
            except Exception:
                logger.exception("Exception in the serve route (direct path)")
                await send_json(send, 500, ERROR_BODY)
                raise  # uvicorn logs it and closes the connection, as after ServerErrorMiddleware
            finally:
                direct.metrics.observe(SERVE_ROUTE, status, time.perf_counter() - started)
            direct.serve.after(reply)

        scope = self.scope
        path = f"/ad/user/{user_id}/serve"
        scope["method"] = "GET"
        scope["path"] = path
        scope["raw_path"] = path.encode("ascii")
        scope["query_string"] = query
        cycle = RequestResponseCycle(
            scope=scope,
            transport=_HeadWithBody(self.transport),  # type: ignore[arg-type]
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=keep_alive,
            on_response=self.on_response_complete,
        )
        cycle.more_body = False
        self.cycle = cycle
        self._start_asgi_task(cycle, finish)  # type: ignore[arg-type]  # Starlette's ASGI types, not uvicorn's

    def _arm(self) -> None:
        self._read.set(client_timeout_s())

    def _disarm(self) -> None:
        self._read.at = None  # the timer, when it fires, finds nothing to time out

    def _read_timed_out(self) -> None:
        if self.transport.is_closing():
            return
        cycle = self.cycle if self._head_done else None
        if self._feedback is not None:  # a direct feedback request's body is late: it has no cycle yet
            self._feedback, self._feedback_body = None, b""
            cycle = None
        if self._direct is not None:
            self._direct.flush()
        if cycle is None or not cycle.response_started:
            self.transport.write(_RESPONSE_408)
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's next receive() returns http.disconnect
            cycle.message_event.set()
        logger.info("closing a connection whose request did not arrive within %.0fs", client_timeout_s())
        self.transport.close()
