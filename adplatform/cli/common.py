"""What every command module shares: the config read once per command, and the entry points' logging."""

from __future__ import annotations

import click

from adplatform.config import Config, ConfigError, load_config
from adplatform.process import configure_logging


def config() -> Config:
    """The environment's config; a bad variable ends the command with its message (exit 1)."""
    try:
        return load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def setup_logging(config: Config) -> None:
    """Configure logging for a long-running command: the one setup every entry point uses."""
    configure_logging(config.log_level)
