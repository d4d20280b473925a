"""What the loadtest tests' fake HTTP servers share."""

from __future__ import annotations


def body_length(head: str) -> int:
    """The ``content-length`` of a request's head (its lines up to the blank one); 0 without one, as a
    GET without a body sends none."""
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return int(value)
    return 0
