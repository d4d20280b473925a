"""``adplatform serve``: the ad server's HTTP workers."""

from __future__ import annotations

import click

from adplatform.cli.common import config, setup_logging, warn_if_dev_key


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on."
)
@click.option(
    "--workers", type=click.IntRange(1, 256), default=1, show_default=True,
    help="Worker processes, each with its own index (about one per core).",
)  # fmt: skip
@click.option(
    "--server", type=click.Choice(["uvicorn", "granian"]), default="uvicorn", show_default=True,
    help="uvicorn (uvloop + httptools) or granian (Rust HTTP server; faster here, see bench/http.py).",
)  # fmt: skip
def serve_cmd(host: str, port: int, workers: int, server: str) -> None:
    """Run the ad server: each worker bootstraps its index from ad-changes, then serves GET /ad/user/..."""
    from adserver.http.server import run

    cfg = config()  # fail fast on a bad environment; each worker reads it again
    setup_logging(cfg)
    warn_if_dev_key(cfg)  # once, here: not in each worker
    run(host=host, port=port, workers=workers, server="granian" if server == "granian" else "uvicorn",
        log_level=cfg.log_level)  # fmt: skip


COMMANDS: tuple[click.Command, ...] = (serve_cmd,)
