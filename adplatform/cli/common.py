"""What every command module shares: the config read once per command, and the entry points' logging."""

from __future__ import annotations

import logging
import sys

import click

from adplatform.config import Config, ConfigError, load_config


def config() -> Config:
    """The environment's config; a bad variable ends the command with its message (exit 1)."""
    try:
        return load_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def setup_logging(config: Config) -> None:
    """Configure logging for a long-running command (only entry points configure logging)."""
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiokafka logs every retry at WARNING/ERROR; one line per outage is enough.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(config.log_level)))
