"""The environment, read once: ``ADP_*`` variables (and a ``.env`` file if present) → frozen config objects.

Every variable is documented in ``.env.example``. Defaults point at the local stack started by
``adplatform stack up``. A bad value fails fast with a message naming the variable. Secrets (token keys,
passwords inside DSNs) are kept out of reprs.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from dotenv.parser import parse_stream

from index.money import CPM_UNITS_PER_UNIT

PREFIX = "ADP_"


class ConfigError(ValueError):
    """A configuration variable is missing or malformed; the message names the variable."""


def redact_url(url: str) -> str:
    """``postgresql://u:secret@h/db`` → ``postgresql://u:***@h/db``: for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def read_dotenv(path: Path) -> dict[str, str]:
    """The ``KEY=value`` pairs of a ``.env`` file, parsed by python-dotenv (quotes, ``export``, inline
    ``# comments``, multi-line quoted values); missing file → {}. Values are taken literally (no
    ``${VAR}`` expansion: a secret may contain ``$``); a line it cannot parse fails fast."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    with path.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            if binding.error:
                raise ConfigError(f"{path}:{binding.original.line}: expected KEY=value")
            if binding.key is not None and binding.value is not None:
                values[binding.key] = binding.value
    return values


@dataclass(frozen=True)
class TopicConfig:
    """Kafka topic names (one place), with an optional prefix that isolates tests and tenants."""

    prefix: str = ""
    partitions: int = 4
    #: ``ADP_KAFKA_REPLICATION``: replicas of each platform topic (1 on the single-node stack, 3 on the
    #: cluster stack); from 3 up a topic takes ``min.insync.replicas`` = replication - 1, so an ``acks=all``
    #: write survives the loss of one broker and still succeeds while one is down.
    replication: int = 1

    @property
    def instructions(self) -> str:
        return f"{self.prefix}campaign-instructions"

    @property
    def instructions_dlq(self) -> str:
        return f"{self.prefix}campaign-instructions-dlq"

    @property
    def ad_changes(self) -> str:
        return f"{self.prefix}ad-changes"

    @property
    def served_ads(self) -> str:
        return f"{self.prefix}served-ads"

    @property
    def feedback(self) -> str:
        return f"{self.prefix}ad-feedback"

    @property
    def requests_sample(self) -> str:
        """A sample of serve requests with their auction's outcome and loss reasons (diagnosis)."""
        return f"{self.prefix}ad-requests-sample"

    @property
    def request_counts(self) -> str:
        """Every ad-server worker's exact serve-request counts per window (served, no-fill by reason):
        the denominator of the reports' fill rate."""
        return f"{self.prefix}ad-request-counts"

    def all(self) -> tuple[str, ...]:
        return (
            self.instructions,
            self.instructions_dlq,
            self.ad_changes,
            self.served_ads,
            self.feedback,
            self.requests_sample,
            self.request_counts,
        )


@dataclass(frozen=True)
class TokenKey:
    key_id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class Config:
    """Everything a process needs to know about its environment."""

    pg_dsn: str = field(repr=False)
    #: Seconds a PostgreSQL statement may take before the client gives up (a cut network never answers).
    pg_command_timeout_s: float
    redis_url: str = field(repr=False)
    kafka_bootstrap: str
    topics: TopicConfig
    #: Consumer-group prefix, so tests can run isolated groups.
    group_prefix: str
    #: Signing keys for request tokens; the first signs, all verify (rotation).
    token_keys: tuple[TokenKey, ...] = field(repr=False)
    token_ttl_s: int
    reserve_cpm_units: int
    default_country: str
    slot_s: int
    stack_dir: Path
    archive_dir: Path
    log_level: str
    #: Seconds a client may take to send one whole request (head and body) from its first byte, and to
    #: start its first request after connecting: slow clients are answered 408 and disconnected.
    client_timeout_s: int = 10
    #: ``ADP_FCAP_DEADLINE_MS``: how long a serve request waits for Redis to check frequency caps; past it,
    #: capped campaigns are skipped for that request (never served over a cap).
    fcap_deadline_ms: int = 20
    #: ``ADP_FCAP_REDIS_URL``: the Redis holding frequency-cap counts (default: ``redis_url``).
    fcap_redis_url: str | None = field(default=None, repr=False)
    #: ``ADP_ENV``: ``development`` (default) or ``production``; production never accepts the dev key quietly.
    environment: str = "development"
    #: ``ADP_REQUEST_SAMPLE_RATE``: share of serve requests (no-fills included) published to
    #: ``ad-requests-sample`` with their loss reasons, from 0 (none) to 1 (all).
    request_sample_rate: float = 0.01
    #: ``ADP_REQUEST_COUNT_INTERVAL_S``: each ad-server worker publishes its serve-request counts to
    #: ``ad-request-counts`` once per window of this many seconds (aligned to the epoch) and when it stops.
    request_count_interval_s: int = 60
    #: Port of each long-running service's Prometheus ``/metrics`` (``ADP_METRICS_PORT_<SERVICE>``; 0 turns
    #: it off); the ad server answers ``/metrics`` on its serving port.
    metrics_ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_METRICS_PORTS))
    #: ``ADP_METRICS_HOST``: the address those ports listen on (0.0.0.0 in a container).
    metrics_host: str = "127.0.0.1"
    #: ``ADP_ADMIN_URL``: the admin service the CLI's ``campaign``, ``dlq list|replay`` and ``explain`` call.
    admin_url: str = "http://127.0.0.1:8100"
    #: ``ADP_API_KEY``: the admin API key those commands send (a secret: never in reprs or logs).
    api_key: str | None = field(default=None, repr=False)
    #: ``ADP_REDIS_WAIT_REPLICAS``: replicas that must acknowledge a debit before feedback answers 200
    #: (``WAIT``; 0 on one node, 1 on the cluster stack, where a master failover must not forget a charge).
    redis_wait_replicas: int = 0
    #: ``ADP_REDIS_WAIT_MS``: how long a debit waits for those replicas; past it the batch is refunded, 503.
    redis_wait_ms: int = 200
    #: ``ADP_WAREHOUSE_DIR``: where the warehouse's tables live, a path or a ``file:``/``s3a:`` URI (None:
    #: ``<stack_dir>/warehouse``).
    warehouse_dir: str | None = None
    #: ``ADP_WAREHOUSE_METASTORE_SCHEMA``: the PostgreSQL schema (in ``pg_dsn``'s database) of the warehouse's
    #: Hive metastore.
    warehouse_metastore_schema: str = "warehouse_metastore"
    #: ``ADP_WAREHOUSE_LOAD_INTERVAL_S``: ``adplatform run`` runs ``warehouse load`` every this many seconds
    #: (0: never; cron can run it instead).
    warehouse_load_interval_s: int = 0
    #: ``ADP_ARCHIVE_JAVA_OPTIONS``: the streaming archive's JVM options (``archive run`` and ``archive
    #: submit``; empty: the JVM's defaults). See ``ARCHIVE_JAVA_OPTIONS``.
    archive_java_options: str = ""

    @property
    def pg_dsn_redacted(self) -> str:
        return redact_url(self.pg_dsn)

    @property
    def redis_url_redacted(self) -> str:
        return redact_url(self.redis_url)

    def group(self, name: str) -> str:
        return f"{self.group_prefix}{name}"

    def namespaced(self, prefix: str, *, archive_dir: Path | None = None) -> Config:
        """This config for a run of its own on a shared stack (a test, a bench, a demo, a fault run):
        every topic and consumer group under ``prefix``, and its own archive directory if given."""
        return replace(
            self,
            topics=replace(self.topics, prefix=prefix),
            group_prefix=prefix,
            archive_dir=self.archive_dir if archive_dir is None else archive_dir,
        )


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{PREFIX}{name}: must be >= {minimum}, got {value}")
    return value


#: Default `/metrics` port per long-running service (`adplatform.services` names; "run": the supervisor).
DEFAULT_METRICS_PORTS: Final[Mapping[str, int]] = {
    "manager": 9101,
    "served-writer": 9102,
    "ledger": 9103,
    "pacer": 9104,
    "reconciler": 9105,
    "archive": 9106,
    "run": 9107,
}


def _metrics_ports(env: Mapping[str, str]) -> dict[str, int]:
    d = DEFAULT_METRICS_PORTS
    ports = {
        "manager": _int(env, "METRICS_PORT_MANAGER", d["manager"]),
        "served-writer": _int(env, "METRICS_PORT_SERVED_WRITER", d["served-writer"]),
        "ledger": _int(env, "METRICS_PORT_LEDGER", d["ledger"]),
        "pacer": _int(env, "METRICS_PORT_PACER", d["pacer"]),
        "reconciler": _int(env, "METRICS_PORT_RECONCILER", d["reconciler"]),
        "archive": _int(env, "METRICS_PORT_ARCHIVE", d["archive"]),
        "run": _int(env, "METRICS_PORT_RUN", d["run"]),
    }
    for service, port in ports.items():
        if port > 65535:
            name = service.upper().replace("-", "_")
            raise ConfigError(f"{PREFIX}METRICS_PORT_{name}: a port from 0 (off) to 65535, got {port}")
    return ports


def _rate(name: str, raw: str | None, default: float) -> float:
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}: expected a number from 0 to 1, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ConfigError(f"{PREFIX}{name}: expected a number from 0 to 1, got {raw!r}")
    return value


def _schema_name(raw: str) -> str:
    """A PostgreSQL schema name that needs no quoting anywhere (it also goes into a JDBC URL)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", raw):
        raise ConfigError(
            f"{PREFIX}WAREHOUSE_METASTORE_SCHEMA: lower-case letters, digits and _ (not first), got {raw!r}"
        )
    return raw


def _cpm_units(raw: str) -> int:
    """A cpm in currency units → exact 1e-10 units (the scale of every auction score)."""
    try:
        scaled = Decimal(raw) * CPM_UNITS_PER_UNIT
    except InvalidOperation:
        raise ConfigError(f"{PREFIX}RESERVE_CPM: not a number: {raw!r}") from None
    if not scaled.is_finite() or scaled != scaled.to_integral_value() or scaled < 0:
        raise ConfigError(f"{PREFIX}RESERVE_CPM: must be >= 0 with at most 10 decimals, got {raw!r}")
    return int(scaled)


def _http_url(name: str, raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{PREFIX}{name}: expected http(s)://host:port, got {raw!r}")
    return raw.strip().rstrip("/")


def _token_keys(raw: str) -> tuple[TokenKey, ...]:
    keys: list[TokenKey] = []
    for item in raw.split(","):
        kid, sep, secret = item.strip().partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9]{1,16}", kid) or len(secret) < 16:
            raise ConfigError(
                f"{PREFIX}TOKEN_KEYS: expected 'kid:secret[,kid:secret...]' with alphanumeric key ids "
                "and secrets of at least 16 characters"
            )
        keys.append(TokenKey(kid, secret.encode()))
    return tuple(keys)


#: Development-only signing key, used when ``ADP_TOKEN_KEYS`` is unset. The ad server warns at start when
#: it is used outside the local stack (``dev_key_warning``).
DEV_TOKEN_KEYS = "dev1:adplatform-development-key-change-me"

#: The local stack's private ports (``adplatform stack up`` serves them on loopback; a test keeps these
#: equal to devstack's).
LOCAL_STACK_PORTS: Final = {"postgres": 15432, "redis": 16379, "kafka": 19092}
#: The streaming archive's JVM compiles with C1 alone: C2 spent half of its CPU over its first minutes
#: (20 % of a core at 200 events/s, beside the ad server on two cores) compiling code that runs a few
#: milliseconds per 5 s micro-batch. At the archive's 5,000 events/s target C1's code still keeps up (issue
#: 18 in BENCHMARKS.md: archive lag, JVM CPU of the demo).
ARCHIVE_JAVA_OPTIONS: Final = "-XX:TieredStopAtLevel=1"


def _on_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def on_local_stack(config: Config) -> bool:
    """Whether every service the config names is the local stack's: a loopback address at its private
    port (PostgreSQL 15432, Redis 16379, every Kafka bootstrap server 19092)."""
    endpoints = [(urlsplit(config.pg_dsn), "postgres"), (urlsplit(config.redis_url), "redis")]
    endpoints += [(urlsplit(f"//{server.strip()}"), "kafka") for server in config.kafka_bootstrap.split(",")]
    try:
        return all(
            _on_loopback(url.hostname) and url.port == LOCAL_STACK_PORTS[service]
            for url, service in endpoints
        )
    except ValueError:  # a malformed port is nobody's local stack
        return False


def dev_key_warning(config: Config) -> str | None:
    """The warning to log when the development token key is in use (``ADP_TOKEN_KEYS`` unset, or the key
    among those given) and either ``ADP_ENV=production`` or a service is not the local stack's; else
    ``None``. Its secret is in this repository: whoever has read it can forge and read request tokens."""
    dev_secret = DEV_TOKEN_KEYS.partition(":")[2].encode()
    if not any(key.secret == dev_secret for key in config.token_keys):
        return None
    if config.environment == "production":
        where = "ADP_ENV=production"
    elif not on_local_stack(config):
        where = "the services are not the local stack's (loopback ports 15432, 16379, 19092)"
    else:
        return None
    return (
        f"the development token key is in use and {where}: anyone who has read adplatform's source can "
        "forge and read request tokens; set ADP_TOKEN_KEYS to a secret key of your own (see .env.example)"
    )


def load_config(environ: Mapping[str, str] | None = None, *, dotenv: Path | None = None) -> Config:
    """Build the config from ``environ`` (default ``os.environ``) over the ``.env`` file (default ./.env)."""
    env: dict[str, str] = dict(read_dotenv(dotenv if dotenv is not None else Path(".env")))
    env.update(os.environ if environ is None else environ)
    stack_dir = Path(env.get(PREFIX + "STACK_DIR") or ".stack").absolute()
    reserve_units = _cpm_units(env.get(PREFIX + "RESERVE_CPM") or "0.000001")
    level = (env.get(PREFIX + "LOG_LEVEL") or "INFO").upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError(f"{PREFIX}LOG_LEVEL: one of DEBUG, INFO, WARNING, ERROR, got {level!r}")
    environment = (env.get(PREFIX + "ENV") or "development").strip().lower()
    if environment not in {"development", "production"}:
        raise ConfigError(f"{PREFIX}ENV: development or production, got {environment!r}")
    return Config(
        pg_dsn=env.get(PREFIX + "PG_DSN") or "postgresql://postgres@127.0.0.1:15432/adplatform",
        pg_command_timeout_s=_int(env, "PG_COMMAND_TIMEOUT_S", 30, minimum=1),
        redis_url=env.get(PREFIX + "REDIS_URL") or "redis://127.0.0.1:16379/0",
        kafka_bootstrap=env.get(PREFIX + "KAFKA_BOOTSTRAP") or "127.0.0.1:19092",
        topics=TopicConfig(
            prefix=env.get(PREFIX + "TOPIC_PREFIX", ""),
            partitions=_int(env, "KAFKA_PARTITIONS", 4, minimum=1),
            replication=_int(env, "KAFKA_REPLICATION", 1, minimum=1),
        ),
        group_prefix=env.get(PREFIX + "GROUP_PREFIX", ""),
        token_keys=_token_keys(env.get(PREFIX + "TOKEN_KEYS") or DEV_TOKEN_KEYS),
        token_ttl_s=_int(env, "TOKEN_TTL_S", 86_400, minimum=1),
        reserve_cpm_units=reserve_units,
        default_country=env.get(PREFIX + "DEFAULT_COUNTRY") or "India",
        slot_s=_int(env, "SLOT_S", 600, minimum=1),
        stack_dir=stack_dir,
        archive_dir=Path(env.get(PREFIX + "ARCHIVE_DIR") or stack_dir / "archive").absolute(),
        log_level=level,
        client_timeout_s=_int(env, "CLIENT_TIMEOUT_S", 10, minimum=1),
        fcap_deadline_ms=_int(env, "FCAP_DEADLINE_MS", 20, minimum=1),
        fcap_redis_url=env.get(PREFIX + "FCAP_REDIS_URL") or None,
        environment=environment,
        metrics_ports=_metrics_ports(env),
        metrics_host=env.get(PREFIX + "METRICS_HOST") or "127.0.0.1",
        request_sample_rate=_rate("REQUEST_SAMPLE_RATE", env.get(PREFIX + "REQUEST_SAMPLE_RATE"), 0.01),
        request_count_interval_s=_int(env, "REQUEST_COUNT_INTERVAL_S", 60, minimum=1),
        admin_url=_http_url("ADMIN_URL", env.get(PREFIX + "ADMIN_URL") or "http://127.0.0.1:8100"),
        api_key=env.get(PREFIX + "API_KEY") or None,
        redis_wait_replicas=_int(env, "REDIS_WAIT_REPLICAS", 0, minimum=0),
        redis_wait_ms=_int(env, "REDIS_WAIT_MS", 200, minimum=1),
        warehouse_dir=env.get(PREFIX + "WAREHOUSE_DIR") or None,
        warehouse_metastore_schema=_schema_name(
            env.get(PREFIX + "WAREHOUSE_METASTORE_SCHEMA") or "warehouse_metastore"
        ),
        warehouse_load_interval_s=_int(env, "WAREHOUSE_LOAD_INTERVAL_S", 0, minimum=0),
        archive_java_options=env.get(PREFIX + "ARCHIVE_JAVA_OPTIONS", ARCHIVE_JAVA_OPTIONS).strip(),
    )
