"""Before the stack starts a service, its port must be free (``adplatform.ports``): a port held by a
process the stack did not start (another Redis, another checkout's stack) stops ``stack up`` at once with
one line naming the port and its holder, instead of a wait for a service that could not bind."""

from __future__ import annotations

from adplatform.ports import listener
from devstack.paths import StackError


def ensure_free(port: int, service: str) -> None:
    """A ``StackError`` naming the port and its holder when something already listens on ``port``."""
    holder = listener(port)
    if holder is not None:
        raise StackError(
            f"{service} cannot start: 127.0.0.1:{port} is already in use by {holder}, which this stack "
            "did not start; stop it (or the stack of the checkout that started it), then run "
            "`adplatform stack up` again"
        )
