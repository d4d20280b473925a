"""The admin package's one exception: an answer other than success, with its HTTP status."""

from __future__ import annotations

from typing import Any


class AdminError(Exception):
    """A request the admin service refuses or cannot complete: ``status`` and ``detail`` become the JSON
    answer ``{"detail": ..., "errors": {...}?, ...extra}``. ``errors`` is one reason per field (422)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        self.errors = errors
        self.extra = extra or {}
        self.headers = headers

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"detail": self.detail}
        if self.errors is not None:
            out["errors"] = self.errors
        out.update(self.extra)
        return out
