"""Errors as RFC 9457 problem details (`application/problem+json`)."""

from __future__ import annotations

from typing import Any

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """An HTTP error the service answers with: status, title, detail (never a subject id)."""

    def __init__(self, status: int, title: str, detail: str = "",
                 headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail or title)
        self.status, self.title, self.detail = status, title, detail
        self.headers = headers or {}
        self.extra = extra

    def body(self, instance: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "about:blank", "title": self.title,
                               "status": self.status, "detail": self.detail, **self.extra}
        if instance:
            out["instance"] = instance
        return out


def from_erasure_error(exc: Exception) -> Problem:
    """The engine's errors as HTTP problems: bad input 400/404, configuration 500, a running
    `erasure run` holding the ledger 503 (retry), a failure 500."""
    from ..errors import (ConfigError, ErasureError, InputError, RetryableError,
                          UnknownRequestError)

    if isinstance(exc, UnknownRequestError):
        return Problem(404, "Not Found", str(exc))
    if isinstance(exc, InputError):
        return Problem(400, "Bad Request", str(exc))
    if isinstance(exc, RetryableError):
        return Problem(503, "Service Unavailable", str(exc), headers={"Retry-After": "5"})
    if isinstance(exc, ConfigError):
        return Problem(500, "Configuration Error", str(exc))
    if isinstance(exc, ErasureError):
        return Problem(500, "Erasure Failed", str(exc))
    return Problem(500, "Internal Server Error", type(exc).__name__)
