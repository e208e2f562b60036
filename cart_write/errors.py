"""The API's one error shape, `{"error": {"code", "message", "field"}}`, for every failure."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from cart_contract import ContractError

log = logging.getLogger("cart_write")

# Werkzeug's HTTP errors mapped to stable, machine-readable codes.
_HTTP_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


class ApiError(Exception):
    """A request the API answers with a 4xx or 503 and a JSON error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


def json_response(body: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialised with orjson."""
    return Response(orjson.dumps(body), status=status, headers=headers,
                    mimetype="application/json")


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """The JSON error body every failure uses."""
    return json_response(
        {"error": {"code": code, "message": message, "field": field}}, status, headers
    )


def register_error_handlers(app: Flask) -> None:
    """Answer every error, ours or Werkzeug's, in the JSON error shape."""

    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> Response:
        return error_response(err.status, err.code, err.message, err.field, err.headers)

    @app.errorhandler(ContractError)
    def _contract_error(err: ContractError) -> Response:
        return error_response(400, err.reason, err.message, err.field)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        headers: dict[str, str] = {}
        valid = getattr(err, "valid_methods", None)
        if valid:
            headers["Allow"] = ", ".join(sorted(valid))
        code = _HTTP_CODES.get(status, "HTTP_ERROR" if status < 500 else "INTERNAL")
        return error_response(status, code, err.description or err.name, None, headers)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        # A bug: log it with the traceback, answer in the same shape.
        log.exception("unhandled error")
        return error_response(500, "INTERNAL", "internal error")
