"""Runs the ad server under uvicorn (uvloop + httptools) or granian, with N worker processes.

Each worker imports ``adserver.app:app`` and runs its own lifespan: its own index (bootstrapped from
``ad-changes``), consumer, profile table and publisher. Workers share nothing but the listening socket.
"""

from __future__ import annotations

from typing import Final, Literal

from adplatform.process import logging_config

APP: Final = "adserver.app:app"
Server = Literal["uvicorn", "granian"]


def run(
    *,
    host: str,
    port: int,
    workers: int,
    server: Server = "uvicorn",
    log_level: str = "INFO",
    app: str = APP,
) -> None:
    """Serve ``app`` (an import string) until SIGINT/SIGTERM; each worker reads the environment itself."""
    if server == "granian":
        from granian import Granian
        from granian.constants import Interfaces, Loops
        from granian.http import HTTP1Settings

        from adplatform.config import load_config

        Granian(
            app,
            address=host,
            port=port,
            interface=Interfaces.ASGI,
            workers=workers,
            loop=Loops.uvloop,
            log_dictconfig=logging_config(log_level),
            # Slow clients: granian closes a connection whose request head takes over ADP_CLIENT_TIMEOUT_S
            # (measured). It does not time out a connection that sends nothing, nor a dribbled body;
            # uvicorn with adserver.http.protocol does all three and answers 408.
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
