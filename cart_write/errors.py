"""The write API's errors: the shared JSON error shape, plus contract violations as 400s."""

from __future__ import annotations

import logging

from flask import Flask, Response

from cart_contract import ContractError
from cart_web.errors import ApiError, error_response, json_response
from cart_web.errors import register_error_handlers as _register_shared

__all__ = ["ApiError", "error_response", "json_response", "register_error_handlers"]

log = logging.getLogger("cart_write")


def register_error_handlers(app: Flask) -> None:
    """Answer every error, ours or Werkzeug's, in the JSON error shape."""
    _register_shared(app, log)

    app.register_error_handler(ContractError, contract_error_response)


def contract_error_response(err: ContractError) -> Response:
    """A contract violation in a request: 400 with the contract's reason and field."""
    return error_response(400, err.reason, err.message, err.field)
