"""Runs the ad server under uvicorn (uvloop + httptools) or granian, with N worker processes.

Each worker imports ``adserver.app:app`` and runs its own lifespan: its own index (bootstrapped from
``ad-changes``), consumer, profile table and publisher. Workers share the listening socket and a metrics
directory: ``run`` creates a fresh one per server (``PROMETHEUS_MULTIPROC_DIR``, inherited by the workers),
so any worker's ``/metrics`` answers the sum over all of them, and removes it when the server stops.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any, Final, Literal

from adplatform.process import logging_config

APP: Final = "adserver.app:app"
Server = Literal["uvicorn", "granian"]

#: granian's settings over its defaults, for every granian server here (the ad server and the bench's
#: references): uvloop, and granian's own choice of runtime (``st`` for RSGI, ``mt`` for ASGI). Neither
#: the other runtime, more runtime threads, the Rust task implementation, HTTP/1 only, websockets off
#: nor a lower backpressure measured better beyond the noise (``python -m bench.granian_tuning``,
#: BENCHMARKS.md 2026-12-05).
GRANIAN_SETTINGS: Final[Mapping[str, object]] = {"loop": "uvloop"}


def granian_settings(overrides: Mapping[str, object] | None = None) -> dict[str, Any]:
    """``granian.Granian`` keyword arguments: ``GRANIAN_SETTINGS`` and ``overrides``, names made enums."""
    from granian.constants import HTTPModes, Loops, RuntimeModes, TaskImpl

    enums: dict[str, type[Any]] = {
        "loop": Loops, "runtime_mode": RuntimeModes, "task_impl": TaskImpl, "http": HTTPModes,
    }  # fmt: skip
    merged = {**GRANIAN_SETTINGS, **(overrides or {})}
    return {k: enums[k](v) if k in enums else v for k, v in merged.items()}


@contextlib.contextmanager
def metrics_directory() -> Iterator[str]:
    """A fresh ``PROMETHEUS_MULTIPROC_DIR`` for one server's workers, removed afterwards (a directory left
    by an earlier server would add its counts to this one's)."""
    from adserver.http.metrics import MULTIPROC_ENV

    path = tempfile.mkdtemp(prefix="adp-metrics-")
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = path
    # prometheus_client picks its value class when imported: with one worker, uvicorn imports the app in
    # this process, so make sure a module imported before the variable was set picks the files too.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # unannotated
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # unannotated
        shutil.rmtree(path, ignore_errors=True)


def run(
    *,
    host: str,
    port: int,
    workers: int,
    server: Server = "uvicorn",
    log_level: str = "INFO",
    app: str = APP,
    granian: Mapping[str, object] | None = None,
) -> None:
    """Serve ``app`` (an import string) until SIGINT/SIGTERM; each worker reads the environment itself.
    ``granian``: settings over ``GRANIAN_SETTINGS`` (the bench's tuning runs)."""
    with metrics_directory():
        _run(
            host=host,
            port=port,
            workers=workers,
            server=server,
            log_level=log_level,
            app=app,
            granian=granian,
        )


def _run(
    *, host: str, port: int, workers: int, server: Server, log_level: str, app: str,
    granian: Mapping[str, object] | None,
) -> None:  # fmt: skip
    if server == "granian":
        from granian import Granian
        from granian.constants import Interfaces
        from granian.http import HTTP1Settings

        from adplatform.config import load_config

        Granian(
            app,
            address=host,
            port=port,
            interface=Interfaces.ASGI,
            workers=workers,
            log_dictconfig=logging_config(log_level),
            **granian_settings(granian),
            # Slow clients: granian closes a connection whose request head takes over ADP_CLIENT_TIMEOUT_S,
            # without a 408 (measured). It does not time out a connection that sends nothing, nor a
            # dribbled body; uvicorn with adserver.http.protocol does all three and answers 408.
            http1_settings=HTTP1Settings(header_read_timeout=load_config().client_timeout_s * 1000),
        ).serve()
        return
    import uvicorn

    from adserver.http.protocol import GuardedHttpToolsProtocol

    uvicorn.run(
        app,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http=GuardedHttpToolsProtocol,
        lifespan="on",
        access_log=False,
        log_config=logging_config(log_level),
        timeout_graceful_shutdown=10,
    )
