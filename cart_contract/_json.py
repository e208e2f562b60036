"""JSON helpers shared by the record modules."""

from __future__ import annotations

from typing import Any

import orjson

from cart_contract.errors import ContractError


def load_object(raw: bytes | str) -> dict[str, Any]:
    """Parse raw JSON that must be an object."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ContractError("INVALID_JSON", f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ContractError("NOT_AN_OBJECT", "a JSON object is required")
    return value


def require(d: dict[str, Any], field: str, *aliases: str) -> Any:
    """The value of a mandatory field (or one of its aliases)."""
    for name in (field, *aliases):
        if name in d and d[name] is not None:
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
    """A mandatory non-empty string field."""
    v = require(d, field)
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise ContractError("WRONG_TYPE", f"{field} must be a string of 1-{max_len} chars", field)
    return v


def integer(d: dict[str, Any], field: str, minimum: int = 0) -> int:
    """A mandatory integer field (bools rejected)."""
    v = require(d, field)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ContractError("WRONG_TYPE", f"{field} must be an integer", field)
    if v < minimum:
        raise ContractError("WRONG_TYPE", f"{field} must be >= {minimum}", field)
    return v
