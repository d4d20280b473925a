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

    def command(self, *, container: bool = False) -> tuple[str, ...]:
        """The full command line: ``adplatform`` and its arguments (plus ``container_args`` if asked)."""
        return ("adplatform", *self.argv, *(self.container_args if container else ()))


#: The ad server listens here (the published port of docker-compose.yml, the CLI's default).
ADSERVER_PORT = 8000

PLATFORM_SERVICES: tuple[PlatformService, ...] = (
    PlatformService("manager", ("manager",)),
    PlatformService(
        "adserver",
        ("serve", "--workers", "2", "--port", str(ADSERVER_PORT)),
        container_args=("--host", "0.0.0.0"),
    ),
    PlatformService("served-writer", ("served-writer",)),
    PlatformService("ledger", ("ledger",)),
    PlatformService("pacer", ("pacer",)),
    PlatformService("reconciler", ("reconcile", "--interval", "10")),
    PlatformService("archive", ("archive", "run"), extra="archive"),
)


def service(name: str) -> PlatformService:
    """The service called ``name``; KeyError naming the known ones otherwise."""
    for svc in PLATFORM_SERVICES:
        if svc.name == name:
            return svc
    raise KeyError(f"no platform service {name!r}: {', '.join(s.name for s in PLATFORM_SERVICES)}")
