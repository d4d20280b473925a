"""The platform's long-running services, defined once: what `docker-compose.yml` runs (a test compares them)
and what a supervisor (`adplatform run`) starts.

Each service is one `adplatform` subcommand that runs until SIGTERM. The one-shot set-up (`migrate`, then
`topics`) is not a service: everything here starts after it has completed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlatformService:
    """One long-running process of the platform: its name and the `adplatform` arguments that start it."""

    name: str
    #: The `adplatform` subcommand and its options, e.g. ``("reconcile", "--interval", "10")``.
    argv: tuple[str, ...]
    #: Arguments added only inside a container: there the process must listen on every interface for a
    #: published port to reach it, while on a host it keeps the CLI's loopback default.
    container_args: tuple[str, ...] = ()
    #: The pyproject extra the process imports beyond the base dependencies (the archive needs pyspark and
    #: a JRE: the Dockerfile's `archive` image); None runs on the base (`server` image).
    extra: str | None = None
    #: How long `adplatform run` waits for the process to stop after SIGTERM before it kills its group.
    stop_timeout_s: float = 30.0
    #: The scheduling priority `adplatform run` gives the process (its children inherit it): above 0 for
    #: batch work that must not take the ad server's cores when both want them (see ``BATCH_NICE``).
    nice: int = 0

    def command(self, *, container: bool = False) -> tuple[str, ...]:
        """The full command line: ``adplatform`` and its arguments (plus ``container_args`` if asked)."""
        return ("adplatform", *self.argv, *(self.container_args if container else ()))


@dataclass(frozen=True)
class PeriodicJob:
    """A bounded `adplatform` command that `adplatform run` starts every N seconds when configured: not a
    service (it exits when done, and docker-compose does not run it; cron can run it instead)."""

    name: str
    argv: tuple[str, ...]
    #: A run still going after this long is stopped (a hung job must not hold back every later run).
    max_run_s: float = 3600.0
    stop_timeout_s: float = 60.0
    nice: int = 0


#: The niceness of batch work (Spark): its micro-batches take every core for a moment, and at equal priority
#: the ad server's requests wait behind them (on 2 cores, serve p99 of a second in the demo). At 10 the
#: kernel gives the ad server about 10 times the batch's share when both are runnable; the batch still gets
#: every idle cycle, so its throughput is unchanged whenever the machine has room.
BATCH_NICE = 10


#: ``ADP_WAREHOUSE_LOAD_INTERVAL_S``: load the warehouse from the archive (nothing new: it returns quickly).
#: A day of 10 million events loads in minutes, so an hour means the run hangs. Its stop is safe at any
#: point: a load leaves each table as before or after it.
WAREHOUSE_LOAD = PeriodicJob("warehouse-load", ("warehouse", "load"), nice=BATCH_NICE)

#: The ad server listens here (the published port of docker-compose.yml, the CLI's default).
ADSERVER_PORT = 8000
#: The admin API listens here (the published port of docker-compose.yml, the CLI's default).
ADMIN_PORT = 8100

PLATFORM_SERVICES: tuple[PlatformService, ...] = (
    PlatformService("manager", ("manager",)),
    PlatformService(
        "adserver",
        ("serve", "--workers", "2", "--port", str(ADSERVER_PORT)),
        container_args=("--host", "0.0.0.0"),
    ),
    # The operator's API: never on the serving path, so it stops with the ad server, before the consumers.
    PlatformService("admin", ("admin", "--port", str(ADMIN_PORT)), container_args=("--host", "0.0.0.0")),
    PlatformService("served-writer", ("served-writer",)),
    PlatformService("ledger", ("ledger",)),
    PlatformService("pacer", ("pacer",)),
    PlatformService("reconciler", ("reconcile", "--interval", "10")),
    # Its SIGTERM completes the current micro-batch first (Spark's start-up and a batch take a while).
    PlatformService("archive", ("archive", "run"), extra="archive", stop_timeout_s=120.0, nice=BATCH_NICE),
)

#: The order `adplatform run` stops services in: the producers of work first (the ad server, the admin API),
#: then the consumers of what they produced, the archive last (it archives what the others published).
#: Names not running are skipped; a service missing here stops last.
STOP_ORDER: tuple[str, ...] = (
    "adserver",
    "admin",
    "manager",
    "served-writer",
    "ledger",
    "pacer",
    "reconciler",
    "archive",
)


def in_stop_order(services: tuple[PlatformService, ...]) -> tuple[PlatformService, ...]:
    """``services`` sorted by ``STOP_ORDER``."""
    rank = {name: i for i, name in enumerate(STOP_ORDER)}
    return tuple(sorted(services, key=lambda s: rank.get(s.name, len(rank))))


def service(name: str) -> PlatformService:
    """The service called ``name``; KeyError naming the known ones otherwise."""
    for svc in PLATFORM_SERVICES:
        if svc.name == name:
            return svc
    raise KeyError(f"no platform service {name!r}: {', '.join(s.name for s in PLATFORM_SERVICES)}")
