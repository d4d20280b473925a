"""What the admin service's client commands share (``campaign …``, ``dlq list|replay``, ``explain``): the
``--admin-url``/``--api-key``/``--json`` options, the client, its errors in one line, and the output.

An error answer (401, 403, 404, 409, 422, 5xx) is one line and exit status 1; no answer at all (the admin
service is not running) is one line naming it, its address and what to run, and exit status 2, as for
PostgreSQL, Redis or Kafka (``adplatform.cli.common``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from adplatform.cli.common import ServiceDownError, config

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:  # the client module itself is imported when a command runs
    from adplatform.admin_client import AdminClient


def client_options(command: F) -> F:
    """``--admin-url``, ``--api-key`` and ``--json`` on a command (its parameters ``admin_url``, ``api_key``,
    ``as_json``)."""
    command = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print the API's JSON answer (for scripts) instead of a table.",
    )(command)
    command = click.option(
        "--api-key", default=None, metavar="KEY",
        help="The API key to send (default: ADP_API_KEY; create one with `adplatform apikey create`).",
    )(command)  # fmt: skip
    command = click.option(
        "--admin-url", default=None, metavar="URL",
        help="The admin service's base URL (default: ADP_ADMIN_URL, else http://127.0.0.1:8100).",
    )(command)  # fmt: skip
    return command


def make_client(admin_url: str | None, api_key: str | None) -> AdminClient:
    """A client for the options, or the config's ``ADP_ADMIN_URL`` and ``ADP_API_KEY``."""
    from adplatform.admin_client import AdminClient

    cfg = config()
    url = (admin_url or cfg.admin_url).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"expected http(s)://host:port, got {url!r}", param_hint="--admin-url")
    return AdminClient(url, api_key or cfg.api_key)


@contextlib.contextmanager
def admin_errors(client: AdminClient) -> Iterator[None]:
    """Turn the client's errors into one line: an error answer exits 1, no answer exits 2."""
    from adplatform.admin_client import AdminApiError, AdminUnreachableError

    try:
        yield
    except AdminUnreachableError as exc:
        raise ServiceDownError(
            f"The admin service is not reachable at {exc.address} ({exc.reason}); start it with "
            "`adplatform admin` (or every service with `adplatform run`), or point ADP_ADMIN_URL "
            "(--admin-url) at a running admin service"
        ) from None
    except AdminApiError as exc:
        message = exc.one_line()
        if exc.status == 401 and not client.api_key:
            message += " Set ADP_API_KEY or pass --api-key (keys come from `adplatform apikey create`)."
        raise click.ClickException(message) from None


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table for people; cells are plain text (a campaign's text may hold rich markup characters)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if not console.is_terminal:  # piped: wide enough that ids and amounts are not cut
        console = Console(width=200)
    table = Table(title=title, title_justify="left", show_edge=False)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(Text("-" if cell is None else str(cell)) for cell in row))
    console.print(table)
