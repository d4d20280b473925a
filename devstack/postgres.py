"""The stack's PostgreSQL: a private cluster under ``.stack/pg`` on :15432 (pg_ctl, as the postgres user
when root), its health check, and the platform's database with its migrations."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from adplatform.config import Config
from adplatform.postgres import quote_ident
from devstack.install import pg_bin
from devstack.paths import PG_PORT, Paths, StackError, say
from devstack.pids import read_pid
from devstack.ports import ensure_free


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; run them as the postgres user the package created.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _postgres_can_reach(path: Path) -> bool:
    """Whether the postgres user can enter ``path`` (every folder above it must let it through)."""
    return subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(path)]).returncode == 0


def _ensure_pg_root(paths: Paths) -> None:
    """Create ``.stack/pg`` owned by postgres. As root, when the checkout sits below a folder postgres may
    not enter (a private temp folder, a home directory), the cluster lives under /var/lib/adplatform and
    ``.stack/pg`` links to it, so initdb and the server can reach their files."""
    root = paths.pg_link
    if root.exists():
        return
    if os.geteuid() != 0 or _postgres_can_reach(paths.root):
        root.mkdir(parents=True)
        _chown_postgres(root)
        return
    digest = hashlib.sha256(str(paths.root.resolve()).encode()).hexdigest()[:12]
    target = Path("/var/lib/adplatform") / f"pg-{digest}"
    target.mkdir(parents=True, exist_ok=True)
    _chown_postgres(target)
    root.symlink_to(target, target_is_directory=True)


def start_postgres(paths: Paths) -> None:
    if read_pid(paths, "postgres") is not None:
        return
    ensure_free(PG_PORT, "PostgreSQL")
    bin_dir = pg_bin()
    if bin_dir is None:
        raise StackError("PostgreSQL binaries not found (initdb, pg_ctl)")
    _ensure_pg_root(paths)
    paths.pg_socket.mkdir(parents=True, exist_ok=True)
    _chown_postgres(paths.pg_socket)
    if not (paths.pg_data / "PG_VERSION").exists():
        say("initialising the PostgreSQL cluster")
        subprocess.run(
            _as_postgres(
                [str(bin_dir / "initdb"), "-D", str(paths.pg_data), "-U", "postgres", "--auth=trust",
                 "-E", "UTF8", "--no-locale"]
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
    log = paths.pg_log
    log.touch()
    _chown_postgres(log)
    options = (
        f"-p {PG_PORT} -c listen_addresses=127.0.0.1 -k {paths.pg_socket} "
        "-c max_connections=200 -c shared_buffers=256MB -c fsync=on"
    )
    result = subprocess.run(
        _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(paths.pg_data), "-l", str(log), "-o", options, "-w",
                      "-t", "60", "start"]),
        capture_output=True,
        text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise StackError(f"PostgreSQL did not start (see {log}): {result.stdout}{result.stderr}")


def stop_postgres(paths: Paths) -> None:
    """A clean (fast) shutdown through pg_ctl."""
    bin_dir = pg_bin()
    assert bin_dir is not None
    subprocess.run(
        _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(paths.pg_data), "-m", "fast", "-w", "stop"]),
        capture_output=True,
    )


async def pg_ok(dsn: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    try:
        return bool(await conn.fetchval("SELECT 1") == 1)
    finally:
        await conn.close()


def admin_dsn(config: Config) -> str:
    """The configured server's maintenance database (``postgres``)."""
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(config.pg_dsn)._replace(path="/postgres"))


async def prepare_database(config: Config) -> None:
    """Create the configured database when missing, and apply the migrations it lacks."""
    import asyncpg

    from adplatform.migrate import migrate

    dbname = config.pg_dsn.rsplit("/", 1)[-1].split("?")[0]
    admin = await asyncpg.connect(admin_dsn(config), timeout=10)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname):
            # CREATE DATABASE takes no parameters; the name is quoted as an identifier.
            await admin.execute(f"CREATE DATABASE {quote_ident(dbname)}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(config.pg_dsn, timeout=10)
    try:
        for name in await migrate(conn):
            say(f"applied migration {name}")
    finally:
        await conn.close()
