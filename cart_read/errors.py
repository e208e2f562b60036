"""The read API's errors: the shared JSON error shape, and a failure of both stores."""

from __future__ import annotations

from cart_web.errors import ApiError, error_object

__all__ = ["ApiError", "StoreUnavailable", "error_object"]


class StoreUnavailable(Exception):
    """Neither store could answer (PostgreSQL down and Redis down or missing the key)."""
