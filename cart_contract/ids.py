"""Identifier and quantity rules shared by the APIs and the record readers."""

from __future__ import annotations

import re
from typing import Any

from cart_contract.errors import ContractError
from cart_contract.limits import QTY_MAX, QTY_MIN

ID_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,64}$")
__all__ = ["ID_RE", "QTY_MAX", "QTY_MIN", "parse_id", "parse_qty"]


def parse_id(value: Any, field: str) -> str:
    """Return a valid id; JSON integers are accepted as their decimal string."""
    if isinstance(value, bool):
        raise ContractError("WRONG_TYPE", f"{field} must be a string", field)
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise ContractError("WRONG_TYPE", f"{field} must be a string", field)
    if not ID_RE.fullmatch(value):
        raise ContractError(
            "INVALID_ID", f"{field} must be 1-64 characters from [A-Za-z0-9._:@-]", field
        )
    return value


def parse_qty(value: Any, field: str = "qty") -> int:
    """Return a quantity: a JSON integer (not bool, float or string) in QTY_MIN..QTY_MAX."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ContractError("WRONG_TYPE", f"{field} must be an integer", field)
    if not QTY_MIN <= value <= QTY_MAX:
        raise ContractError(
            "INVALID_QTY", f"{field} must be between {QTY_MIN} and {QTY_MAX}", field
        )
    return value
