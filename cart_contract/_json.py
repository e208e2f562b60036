"""JSON helpers shared by the record modules: each check raises ContractError naming the field."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from cart_contract.errors import ContractError


def load_object(raw: bytes | str) -> dict[str, Any]:
    """Parse raw JSON that must be an object."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ContractError("INVALID_JSON", f"not valid JSON: {exc}") from None
    return as_object(value)


def as_object(value: Any, field: str | None = None) -> dict[str, Any]:
    """The value itself when it is a JSON object."""
    if not isinstance(value, dict):
        where = f"{field} must be" if field else "a JSON object is required, not"
        raise ContractError("NOT_AN_OBJECT", f"{where} a JSON object", field)
    return value


def as_list(value: Any, field: str) -> list[Any]:
    """The value itself when it is a JSON array."""
    if not isinstance(value, list):
        raise ContractError("WRONG_TYPE", f"{field} must be an array", field)
    return value


def require(d: dict[str, Any], field: str, *aliases: str) -> Any:
    """The value of a mandatory field (or one of its aliases); null counts as missing."""
    value = d.get(field)
    if value is not None:  # the common case, without building the names tuple
        return value
    for name in aliases:
        if d.get(name) is not None:
            return d[name]
    raise ContractError("MISSING_FIELD", f"{field} is required", field)


def schema_version(d: dict[str, Any]) -> int:
    """The record's schemaVersion, 1 when absent."""
    v = d.get("schemaVersion", 1)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ContractError(
            "WRONG_TYPE", "schemaVersion must be a positive integer", "schemaVersion"
        )
    return v


def text(d: dict[str, Any], field: str, max_len: int = 200) -> str:
    """A mandatory non-empty string field of at most `max_len` characters."""
    v = require(d, field)
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise ContractError("WRONG_TYPE", f"{field} must be a string of 1-{max_len} chars", field)
    return v


def optional_text(d: dict[str, Any], field: str, max_len: int = 200) -> str | None:
    """An optional string field; absent or null gives None."""
    return None if d.get(field) is None else text(d, field, max_len)


def integer(d: dict[str, Any], field: str, minimum: int = 0, maximum: int | None = None) -> int:
    """A mandatory integer field in [minimum, maximum] (bools and floats rejected)."""
    v = require(d, field)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ContractError("WRONG_TYPE", f"{field} must be an integer", field)
    if v < minimum or (maximum is not None and v > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ContractError("WRONG_TYPE", f"{field} must be >= {minimum}{upper}", field)
    return v


def decimal_string(d: dict[str, Any], field: str) -> Decimal:
    """A mandatory money field written as a decimal string (never a JSON number)."""
    v = require(d, field)
    if not isinstance(v, str):
        raise ContractError("WRONG_TYPE", f"{field} must be a decimal string", field)
    try:
        amount = Decimal(v)
    except InvalidOperation:
        raise ContractError("INVALID_PRICE", f"{field} {v!r} is not a number", field) from None
    if not amount.is_finite():
        raise ContractError("INVALID_PRICE", f"{field} must be finite", field)
    return amount
