"""The reservations sink against a real PostgreSQL: the highest version per product wins."""

from __future__ import annotations

import psycopg
import pytest

from cart_contract import ReservedCount, encode_reserved_count
from connectors.migrate import migrate
from connectors.sinks import ReservationWriter
from tests.support.connectors import FakeMessage, fresh_database

pytestmark = pytest.mark.integration


@pytest.fixture
def db(database_url: str, unique: str) -> str:
    url = fresh_database(database_url, f"test_{unique}")
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
    return url


def msg(pid: str, reserved: int, version: int, offset: int = 0) -> FakeMessage:
    return FakeMessage(encode_reserved_count(ReservedCount(pid, reserved, version)),
                       pid.encode(), offset)


def stored(db: str) -> dict[str, tuple[int, int]]:
    with psycopg.connect(db) as conn:
        return {pid: (n, v) for pid, n, v in conn.execute(
            "SELECT product_id, reserved, version FROM product_reservations")}


def test_counts_land_version_guarded_and_poison_is_refused(db: str) -> None:
    writer = ReservationWriter(db)
    poison = writer([msg("1", 2, 10), msg("1", 3, 14), msg("2", 1, 11),
                     FakeMessage(b'{"productId":"3","reserved":-1,"version":1}', b"3", 9)])
    assert [p.message.offset() for p in poison] == [9]
    assert stored(db) == {"1": (3, 14), "2": (1, 11)}
    # Repeated and older records (a resumed aggregator writes again) change nothing.
    assert writer([msg("1", 2, 10), msg("1", 3, 14), msg("2", 5, 12)]) == []
    assert stored(db) == {"1": (3, 14), "2": (5, 12)}
