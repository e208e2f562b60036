"""The API's error type and its JSON shape `{"error": {"code", "message", "field"}}`."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error answered to the client with an HTTP status and the JSON error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        # Fields beside "error" (e.g. the cart a 504 has); never inside it.
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": error_object(self.code, self.message, self.field), **self.extra}


def error_object(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The inner error object."""
    return {"code": code, "message": message, "field": field}


class StoreUnavailable(Exception):
    """Neither store could answer (PostgreSQL down and Redis down or missing the key)."""
