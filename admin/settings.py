"""The admin service's own settings, read once at start from ``ADP_*`` (and ``.env``), failing fast.

``ADP_ADSERVER_URLS`` (comma-separated, default ``http://127.0.0.1:8000``): the ad servers whose index a
``?wait=true`` write waits for; ``ADP_ADSERVER_WORKERS`` (default 2, as ``adplatform run`` starts them): how
many distinct workers behind each URL must report the new version; ``ADP_ADMIN_WAIT_TIMEOUT_S`` (default
10): how long a write waits before answering 504; ``ADP_ADMIN_MAX_BODY_BYTES`` (default 128 KiB, the Ad
Manager's own message limit): larger bodies get 413. ``ADP_ADMIN_SCRAPE_URLS`` (comma-separated, default
empty): the ``/metrics`` URLs the dashboard scrapes; empty means each ad server's ``/metrics`` and every
service's metrics port from ``Config.metrics_ports``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from adplatform.config import PREFIX, ConfigError, read_dotenv
from adplatform.instruction import MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class AdminConfig:
    """What the admin service needs beyond the platform's ``Config``."""

    adserver_urls: tuple[str, ...] = ("http://127.0.0.1:8000",)
    adserver_workers: int = 2
    wait_timeout_s: float = 10.0
    max_body_bytes: int = MAX_MESSAGE_BYTES
    #: The dashboard's scrape targets; empty: derived from ``adserver_urls`` and ``Config.metrics_ports``.
    scrape_urls: tuple[str, ...] = ()


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}: expected a number, got {raw!r}") from None
    if not value >= minimum:  # also refuses NaN
        raise ConfigError(f"{PREFIX}{name}: must be >= {minimum}, got {raw!r}")
    return value


def _urls(raw: str, name: str = "ADSERVER_URLS", *, allow_empty: bool = False) -> tuple[str, ...]:
    urls = tuple(u.strip().rstrip("/") for u in raw.split(",") if u.strip())
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{PREFIX}{name}: expected http(s)://host:port[,...], got {url!r}")
    if not urls and not allow_empty:
        raise ConfigError(f"{PREFIX}{name}: empty")
    return urls


def load_admin_config(environ: Mapping[str, str] | None = None, *, dotenv: Path | None = None) -> AdminConfig:
    """``AdminConfig`` from ``environ`` (default ``os.environ``) over the ``.env`` file (default ./.env)."""
    env: dict[str, str] = dict(read_dotenv(dotenv if dotenv is not None else Path(".env")))
    env.update(os.environ if environ is None else environ)
    return AdminConfig(
        adserver_urls=_urls(env.get(PREFIX + "ADSERVER_URLS") or "http://127.0.0.1:8000"),
        adserver_workers=int(_number(env, "ADSERVER_WORKERS", 2, minimum=1)),
        wait_timeout_s=_number(env, "ADMIN_WAIT_TIMEOUT_S", 10.0, minimum=0.1),
        max_body_bytes=int(_number(env, "ADMIN_MAX_BODY_BYTES", MAX_MESSAGE_BYTES, minimum=1024)),
        scrape_urls=_urls(env.get(PREFIX + "ADMIN_SCRAPE_URLS") or "", "ADMIN_SCRAPE_URLS", allow_empty=True),
    )
