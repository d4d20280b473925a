"""The local stack: PostgreSQL, Redis and Kafka (KRaft) as local processes under ``.stack/``, no Docker.

``up`` installs what is missing (Debian/Ubuntu as root), fetches the Kafka broker and Spark connector jars
with Maven once, starts each service on its private port, waits until each answers a real request, then
creates the database, applies migrations and creates the topics. Every step is idempotent. ``down`` stops
the services by the PIDs it recorded. Logs go to ``.stack/logs/``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from adplatform.config import Config

PG_PORT = 15432
REDIS_PORT = 16379
KAFKA_PORT = 19092
KAFKA_CONTROLLER_PORT = 19093


class StackError(RuntimeError):
    """A service could not be installed, started or reached; the message says which and what to do."""


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def pg_link(self) -> Path:
        """``.stack/pg``: the private cluster's folder, or a link to it (see ``_ensure_pg_root``)."""
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

    def pid_file(self, service: str) -> Path:
        return self.run / f"{service}.pid"


def _say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


# --- installation -----------------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _is_debian_root() -> bool:
    return os.geteuid() == 0 and Path("/etc/debian_version").exists() and shutil.which("apt-get") is not None


def _apt_install(packages: list[str]) -> None:
    _say(f"installing {' '.join(packages)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], check=True, env=env
    )


def ensure_installed() -> None:
    """Install PostgreSQL, Redis, Java and Maven when missing (Debian/Ubuntu as root), else say what to do."""
    missing: list[str] = []
    if _pg_bin() is None:
        missing.append("postgresql")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if shutil.which("java") is None:
        missing.append("openjdk-17-jre-headless")
    if shutil.which("mvn") is None:
        missing.append("maven")
    # Tools of the test suite and the benchmarks: headless Chromium renders the HTML report, wrk drives
    # the HTTP harness.
    if shutil.which("chromium") is None:
        missing += ["chromium", "fonts-dejavu-core"]
    if shutil.which("wrk") is None:
        missing.append("wrk")
    if not missing:
        return
    if _is_debian_root():
        _apt_install(missing)
        return
    raise StackError(
        f"missing: {', '.join(missing)}. Install them with your package manager "
        "(PostgreSQL ≥ 14, Redis ≥ 6, Java ≥ 17, Maven ≥ 3.6; Chromium and wrk for tests and benchmarks), "
        "then run `adplatform stack up` again."
    )


def _pom(name: str) -> Path:
    return Path(str(resources.files("devstack").joinpath("poms", name)))


def fetch_jars(paths: Paths) -> None:
    """Resolve the Kafka broker and the Spark Kafka connector from Maven Central into ``.stack/jars`` once."""
    jobs = [
        (paths.kafka_jars, "kafka-pom.xml", "kafka_2.13-", []),
        (
            paths.spark_jars,
            "spark-pom.xml",
            "spark-sql-kafka-0-10_2.13-",
            # Only what Spark itself lacks: the connector, its token provider and clients, the JDBC driver.
            [
                "-DincludeArtifactIds=spark-sql-kafka-0-10_2.13,spark-token-provider-kafka-0-10_2.13,"
                "kafka-clients,commons-pool2,postgresql"
            ],
        ),
    ]
    for target, pom, marker, extra in jobs:
        if target.is_dir() and any(p.name.startswith(marker) for p in target.iterdir()):
            continue
        _say(f"fetching jars with Maven into {target} (once)")
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        cmd = [
            "mvn", "-q", "-B", "-f", str(_pom(pom)), "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}", "-DincludeScope=runtime", *extra,
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"maven could not fetch {pom}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
        shutil.rmtree(target, ignore_errors=True)
        partial.rename(target)  # all or nothing: a killed fetch leaves no half set behind


# --- processes --------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def read_pid(paths: Paths, service: str) -> int | None:
    pid_file = paths.pg_data / "postmaster.pid" if service == "postgres" else paths.pid_file(service)
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _pid_alive(pid) else None


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


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
    pg_bin = _pg_bin()
    if pg_bin is None:
        raise StackError("PostgreSQL binaries not found (initdb, pg_ctl)")
    _ensure_pg_root(paths)
    paths.pg_socket.mkdir(parents=True, exist_ok=True)
    _chown_postgres(paths.pg_socket)
    if not (paths.pg_data / "PG_VERSION").exists():
        _say("initialising the PostgreSQL cluster")
        subprocess.run(
            _as_postgres(
                [str(pg_bin / "initdb"), "-D", str(paths.pg_data), "-U", "postgres", "--auth=trust",
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
        _as_postgres([str(pg_bin / "pg_ctl"), "-D", str(paths.pg_data), "-l", str(log), "-o", options, "-w",
                      "-t", "60", "start"]),
        capture_output=True,
        text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise StackError(f"PostgreSQL did not start (see {log}): {result.stdout}{result.stderr}")


#: Redis persistence, here and in docker-compose.yml (a test keeps them equal). AOF fsynced on every
#: write batch: a restart must not forget a charge (money), and Redis groups the fsyncs of one event-loop
#: turn, so throughput stays high under concurrency. No RDB snapshots: the AOF is the persistence, and
#: the default save points fork a snapshot of the whole data set every minute under load, which on a
#: small machine takes a core for seconds.
REDIS_PERSISTENCE: Final = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")


def start_redis(paths: Paths) -> None:
    if read_pid(paths, "redis") is not None:
        return
    paths.redis.mkdir(parents=True, exist_ok=True)
    cmd = [
        "redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--dir", str(paths.redis),
        *REDIS_PERSISTENCE,
        "--daemonize", "yes", "--pidfile", str(paths.pid_file("redis")),
        "--logfile", str(paths.logs / "redis.log"), "--protected-mode", "yes",
    ]  # fmt: skip
    subprocess.run(cmd, check=True)
    # Until its data set (the AOF) is loaded, Redis answers LOADING: wait for a real PONG.
    _wait(lambda: _redis_pong(REDIS_PORT) and read_pid(paths, "redis") is not None, 120, "Redis", paths)


KAFKA_PROPERTIES = """\
# KRaft, one combined broker + controller, private ports. Written by `adplatform stack up`.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
num.partitions=4
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=1000
log.retention.hours=168
"""

LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
"""


def _kafka_java(paths: Paths, main: str, *args: str) -> list[str]:
    return [
        "java", "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{paths.kafka / 'log4j.properties'}",
        "-cp", f"{paths.kafka_jars}/*", main, *args,
    ]  # fmt: skip


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, never beginning with '-'.

    Kafka's own ``Uuid.randomUuid`` draws again in that case too: one id in 64 would begin with '-' and
    be read as an option by ``kafka-storage format``.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def start_kafka(paths: Paths) -> None:
    if read_pid(paths, "kafka") is not None:
        return
    paths.kafka.mkdir(parents=True, exist_ok=True)
    props = paths.kafka / "server.properties"
    props.write_text(
        KAFKA_PROPERTIES.format(port=KAFKA_PORT, controller=KAFKA_CONTROLLER_PORT, data=paths.kafka / "data")
    )
    (paths.kafka / "log4j.properties").write_text(LOG4J_PROPERTIES.format(log=paths.logs / "kafka.log"))
    cluster_file = paths.kafka / "cluster.id"
    if not cluster_file.exists():
        cluster_file.write_text(new_cluster_id())
    cluster_id = cluster_file.read_text().strip()
    # `--cluster-id=ID`, one argument: an id kept from an older checkout may begin with '-', and as a
    # separate argument the tool's parser would take it for an option.
    fmt = subprocess.run(
        _kafka_java(paths, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                    "--config", str(props), "--ignore-formatted"),
        capture_output=True,
        text=True,
    )  # fmt: skip
    if fmt.returncode != 0:
        raise StackError(f"Kafka storage format failed: {fmt.stdout}{fmt.stderr}")
    with (paths.logs / "kafka.out").open("ab") as out:
        proc = subprocess.Popen(
            _kafka_java(paths, "kafka.Kafka", str(props)),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the CLI; `down` stops it by PID
        )
    paths.pid_file("kafka").write_text(str(proc.pid))


def _wait(check: object, timeout_s: float, what: str, paths: Paths) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise StackError(f"{what} did not answer within {timeout_s:.0f}s; see {paths.logs}")


# --- health -----------------------------------------------------------------------------------------------


async def _pg_ok(dsn: str) -> bool:
    import asyncpg

    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    try:
        return bool(await conn.fetchval("SELECT 1") == 1)
    finally:
        await conn.close()


async def _redis_ok(url: str) -> bool:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, quoted (for the statements that take no parameters)."""
    return '"' + name.replace('"', '""') + '"'


def _admin_dsn(config: Config) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(config.pg_dsn)._replace(path="/postgres"))


async def _health(config: Config) -> dict[str, bool]:
    from adplatform.kafka import kafka_alive

    # While a broker starts, aiokafka logs every refused connection; the health answer says it all.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    pg, rd, kf = await asyncio.gather(
        _pg_ok(_admin_dsn(config)), _redis_ok(config.redis_url), kafka_alive(config.kafka_bootstrap)
    )
    return {"postgres": pg, "redis": rd, "kafka": kf}


def health(config: Config) -> dict[str, bool]:
    return asyncio.run(_health(config))


async def _prepare(config: Config) -> None:
    """Create the database, apply migrations, create topics."""
    import asyncpg

    from adplatform.kafka import ensure_topics
    from adplatform.migrate import migrate

    dbname = config.pg_dsn.rsplit("/", 1)[-1].split("?")[0]
    admin = await asyncpg.connect(_admin_dsn(config), timeout=10)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname):
            # CREATE DATABASE takes no parameters; the name is quoted as an identifier.
            await admin.execute(f"CREATE DATABASE {quote_ident(dbname)}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(config.pg_dsn, timeout=10)
    try:
        for name in await migrate(conn):
            _say(f"applied migration {name}")
    finally:
        await conn.close()
    created = await ensure_topics(config)
    if created:
        _say(f"created topics: {', '.join(created)}")


def up(config: Config) -> None:
    """Install, fetch, start, wait, prepare. Idempotent."""
    paths = Paths(config.stack_dir)
    for d in (paths.logs, paths.run):
        d.mkdir(parents=True, exist_ok=True)
    ensure_installed()
    fetch_jars(paths)
    start_postgres(paths)
    start_redis(paths)
    start_kafka(paths)
    deadline = time.monotonic() + 120
    state = health(config)
    while not all(state.values()):
        if time.monotonic() > deadline:
            down_ = [k for k, ok in state.items() if not ok]
            raise StackError(f"not answering after 120s: {', '.join(down_)}; see {paths.logs}")
        if read_pid(paths, "kafka") is None:
            raise StackError(f"Kafka exited during start; see {paths.logs / 'kafka.log'}")
        time.sleep(0.5)
        state = health(config)
    asyncio.run(_prepare(config))
    _say(f"up: postgres :{PG_PORT}, redis :{REDIS_PORT}, kafka :{KAFKA_PORT}")


def _stop_pid(pid: int, name: str, timeout_s: float = 30.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    _say(f"{name} (pid {pid}) ignored SIGTERM for {timeout_s:.0f}s; sending SIGKILL")
    os.kill(pid, signal.SIGKILL)


def stop_service(config: Config, service: str) -> None:
    """Stop one service by the PID the stack recorded (postgres via pg_ctl for a clean shutdown)."""
    paths = Paths(config.stack_dir)
    pid = read_pid(paths, service)
    if pid is None:
        return
    if service == "postgres":
        pg_bin = _pg_bin()
        assert pg_bin is not None
        subprocess.run(
            _as_postgres([str(pg_bin / "pg_ctl"), "-D", str(paths.pg_data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
        )
        return
    _stop_pid(pid, service)
    paths.pid_file(service).unlink(missing_ok=True)


SERVICES = ("kafka", "redis", "postgres")


def down(config: Config) -> None:
    for service in SERVICES:
        stop_service(config, service)
        _say(f"stopped {service}")


def status(config: Config) -> list[tuple[str, int, int | None, bool]]:
    """(service, port, pid, healthy) for each service."""
    paths = Paths(config.stack_dir)
    state = health(config)
    ports = {"postgres": PG_PORT, "redis": REDIS_PORT, "kafka": KAFKA_PORT}
    return [(s, ports[s], read_pid(paths, s), state[s]) for s in ("postgres", "redis", "kafka")]


def log_files(config: Config) -> dict[str, Path]:
    logs = Paths(config.stack_dir).logs
    return {
        "postgres": Paths(config.stack_dir).pg_log,
        "redis": logs / "redis.log",
        "kafka": logs / "kafka.log",
    }
