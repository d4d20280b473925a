"""Where the local stack lives (``.stack/``), its private ports, and what its modules share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PG_PORT = 15432
REDIS_PORT = 16379
KAFKA_PORT = 19092
KAFKA_CONTROLLER_PORT = 19093
#: Where Debian's nginx package puts its binary, relative to the package's root.
NGINX_IN_PACKAGE = Path("usr/sbin/nginx")


class StackError(RuntimeError):
    """A service could not be installed, started or reached; the message says which and what to do."""


@dataclass(frozen=True)
class Paths:
    """The folders and files of one stack under its root (``.stack/`` by default)."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def pg_link(self) -> Path:
        """``.stack/pg``: the private cluster's folder, or a link to it (see ``ensure_pg_root``)."""
        return self.root / "pg"

    @property
    def pg_root(self) -> Path:
        # Resolved: postgres is given the real path, which it can reach even when the link's cannot.
        return self.pg_link.resolve()

    @property
    def pg_data(self) -> Path:
        return self.pg_root / "data"

    @property
    def pg_socket(self) -> Path:
        return self.pg_root / "socket"

    @property
    def pg_log(self) -> Path:
        # Inside the cluster's folder: the server writes it as the postgres user.
        return self.pg_root / "postgres.log"

    @property
    def redis(self) -> Path:
        return self.root / "redis"

    @property
    def kafka(self) -> Path:
        return self.root / "kafka"

    @property
    def kafka_jars(self) -> Path:
        return self.root / "jars" / "kafka"

    @property
    def spark_jars(self) -> Path:
        return self.root / "jars" / "spark"

    @property
    def nginx_tree(self) -> Path:
        """Debian's nginx package, unpacked for the HTTP benchmark's reference (``install.fetch_nginx``)."""
        return self.root / "tools" / "nginx"

    @property
    def nginx(self) -> Path:
        """The binary in ``nginx_tree``."""
        return self.nginx_tree / NGINX_IN_PACKAGE

    def pid_file(self, service: str) -> Path:
        return self.run / f"{service}.pid"


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, paths: Paths) -> None:
    """Poll ``check`` until it holds; a ``StackError`` pointing at the logs after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise StackError(f"{what} did not answer within {timeout_s:.0f}s; see {paths.logs}")
