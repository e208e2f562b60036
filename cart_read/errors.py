"""The read API's errors: the shared JSON error shape, and a failure of both stores."""

from __future__ import annotations

from cart_web.errors import ApiError

__all__ = ["ApiError", "StoreUnavailable"]


class StoreUnavailable(Exception):
    """Neither store could answer (PostgreSQL down and Redis down or missing the key)."""
