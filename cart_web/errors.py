"""The one error shape of both APIs, `{"error": {"code", "message", "field"}}`, for all failures."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

JSON = "application/json"

# Werkzeug's HTTP errors mapped to stable, machine-readable codes.
HTTP_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


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


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response; bytes are sent as they are (documents already serialised)."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(data, status, headers=headers, mimetype=JSON)


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """The JSON error response every failure uses."""
    return json_response({"error": error_object(code, message, field)}, status, headers)


def api_error_response(err: ApiError) -> Response:
    """The response an ApiError stands for."""
    return json_response(err.body(), err.status, err.headers)


def internal_error_response(log: logging.Logger) -> Response:
    """A bug: logged with the traceback of the exception being handled, answered as a 500."""
    log.exception("unhandled error")
    return error_response(500, "INTERNAL", "internal error")


def register_error_handlers(app: Flask, log: logging.Logger) -> None:
    """Answer ApiError, Werkzeug's HTTP errors and any bug in the JSON error shape.

    Services add handlers for their own exception types; Flask picks the most specific one.
    """

    app.register_error_handler(ApiError, api_error_response)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        valid = getattr(err, "valid_methods", None)
        headers = {"Allow": ", ".join(sorted(valid))} if valid else {}
        code = HTTP_CODES.get(status) or (
            (err.name or "ERROR").upper().replace(" ", "_") if status < 500 else "INTERNAL")
        return error_response(status, code, err.description or err.name or code, None, headers)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        return internal_error_response(log)
