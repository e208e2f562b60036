"""The one error type every contract parse failure raises."""

from __future__ import annotations


class ContractError(ValueError):
    """A record or request field that breaks the contract; `reason` is a short code."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" (field {self.field})" if self.field else ""
        return f"{self.reason}: {self.message}{where}"
