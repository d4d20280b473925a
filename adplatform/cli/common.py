"""What every command module shares: the config read once per command, the entry points' logging, and the
root group's handler that turns "a service is down" into one line and exit status 2."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

import click

from adplatform.config import Config, ConfigError, dev_key_warning, load_config
from adplatform.errors import connection_reason
from adplatform.process import configure_logging

#: Exit status of a command that could not reach a service it needs (PostgreSQL, Redis or Kafka). Click
#: exits with 2 on a usage error too, and ``reset`` when it is refused: 2 means "nothing was done, fix the
#: setup and run it again"; 1 is a failure of the command itself.
SERVICE_DOWN: Final = 2

#: Option types of counts, rates and durations: a zero or negative one is a usage error (exit 2, the
#: option named), not a run that does nothing, spins or never ends.
POSITIVE: Final = click.FloatRange(min=0, min_open=True)
AT_LEAST_ONE: Final = click.IntRange(min=1)

#: service -> (its name for people, the variable that points at it)
_SERVICES: Final = {
    "kafka": ("Kafka", "ADP_KAFKA_BOOTSTRAP"),
    "postgres": ("PostgreSQL", "ADP_PG_DSN"),
    "redis": ("Redis", "ADP_REDIS_URL"),
}

logger = logging.getLogger(__name__)


def config() -> Config:
    """The environment's config; a bad variable ends the command with its message (exit 1)."""
    try:
        return load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def serve_metrics(config: Config, service: str) -> None:
    """Start ``service``'s ``/metrics`` on its port (``adplatform.metrics``), in the process's startup."""
    from adplatform.metrics import serve_metrics as start

    start(config, service)


def setup_logging(config: Config) -> None:
    """Configure logging for a long-running command: the one setup every entry point uses."""
    configure_logging(config.log_level)


def warn_if_dev_key(config: Config) -> None:
    """At the start of a process that issues or verifies request tokens (the ad server, feedback, the admin
    service): warn once when the development key is used outside the local stack."""
    warning = dev_key_warning(config)
    if warning is not None:
        logger.warning("%s", warning)


class ServiceDownError(click.ClickException):
    """A service the command needs is not reachable: one line, exit status ``SERVICE_DOWN``."""

    exit_code = SERVICE_DOWN


def _address(service: str, cfg: Config | None) -> str:
    if cfg is None:
        return "its configured address"
    if service == "kafka":
        return cfg.kafka_bootstrap
    url = urlsplit(cfg.pg_dsn if service == "postgres" else cfg.redis_url)
    default_port = 5432 if service == "postgres" else 6379
    try:
        port = url.port or default_port
    except ValueError:  # a malformed port: show the URL itself (without its password)
        return cfg.pg_dsn_redacted if service == "postgres" else cfg.redis_url_redacted
    if not url.hostname:  # a Unix socket or a key=value DSN
        return cfg.pg_dsn_redacted if service == "postgres" else cfg.redis_url_redacted
    return f"{url.hostname}:{port}"


def service_down_message(service: str, exc: BaseException) -> str:
    """One line: which service, where, why, and what to run."""
    try:
        cfg: Config | None = load_config()
    except ConfigError:
        cfg = None
    name, variable = _SERVICES[service]
    why = connection_reason(exc)
    return (
        f"{name} is not reachable at {_address(service, cfg)} ({why}); start the local stack "
        f"with `adplatform stack up`, or point {variable} at a running {name}"
    )


def script_main(main: Callable[[], int]) -> int:
    """Run the ``main`` of a ``python -m`` script (the demo, chaos, the benches): a service that is down
    ends it as it ends an ``adplatform`` command, with one line naming the service, its address and what to
    run, and exit status ``SERVICE_DOWN``, instead of a traceback; every other error is raised as it is."""
    logging.getLogger("aiokafka").addFilter(_drop_bootstrap_refusals)
    try:
        return main()
    except Exception as exc:  # the script's top-level guard: only a service being down is translated
        from adplatform.errors import unreachable_service  # imports the clients: only on failure

        found = unreachable_service(exc)
        if found is None:
            raise
        print(f"Error: {service_down_message(*found)}", file=sys.stderr)
        return SERVICE_DOWN


def _drop_bootstrap_refusals(record: logging.LogRecord) -> bool:
    """aiokafka logs an ERROR per bootstrap server it cannot reach, then raises KafkaConnectionError, which
    the group reports in one line (or a service's retry loop logs): the log line would only repeat it."""
    return not (isinstance(record.msg, str) and record.msg.startswith('Unable connect to "'))


class PlatformGroup(click.Group):
    """The root command group: a command that fails because PostgreSQL, Redis or Kafka is down (a
    connection failure ``adplatform.errors`` recognises) ends with one line naming the service, its address
    and what to run, and exit status 2, instead of a traceback; every other error is left as it is."""

    def invoke(self, ctx: click.Context) -> Any:
        logging.getLogger("aiokafka").addFilter(_drop_bootstrap_refusals)
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:  # the CLI's top-level guard: only a service being down is translated
            from adplatform.errors import unreachable_service  # imports the clients: only on failure

            found = unreachable_service(exc)
            if found is None:
                raise
            raise ServiceDownError(service_down_message(*found)) from None
