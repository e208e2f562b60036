"""An in-memory idempotency store with the Redis store's semantics, for unit tests (no I/O)."""

from __future__ import annotations

from cart_write.idempotency import DONE, PENDING, IdempotencyUnavailable, Previous


class MemoryIdempotencyStore:
    """Records in a dict; `down` makes every call fail as an unreachable Redis does."""

    def __init__(self) -> None:
        self.records: dict[str, Previous] = {}
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise IdempotencyUnavailable("idempotency records unavailable (memory store down)")

    def begin(self, key: str, fingerprint: str) -> Previous | None:
        self._check()
        if key in self.records:
            return self.records[key]
        self.records[key] = Previous(fingerprint, PENDING)
        return None

    def complete(self, key: str, fingerprint: str, status: int, body: bytes) -> None:
        self._check()
        self.records[key] = Previous(fingerprint, DONE, status, body)

    def abandon(self, key: str, fingerprint: str) -> None:
        self._check()
        if self.records.get(key) == Previous(fingerprint, PENDING):
            del self.records[key]
