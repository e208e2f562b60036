"""Connectors: parsing catalog files (JSON lines, key:json lines, CSV) and the loader's CLI."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connectors.catalog import BadRow, parse_lines, parse_rows
from tests.support.cli import cartstream


def rows(text: str) -> list[tuple[int, object]]:
    return list(parse_rows(text))


def test_json_and_key_json_lines_with_line_numbers() -> None:
    got = rows(
        '{"productId":"1","productName":"IPhone 12","price":"65000","stockQty":768}\n'
        "\n"
        '2:{"productId":"2","productName":"Samsung Galaxy S21","price":55000,"stockQty":500}\n'
        'a:b:{"productId":"a:b","productName":"Colon id","price":1.10,"stockQty":0}\n'
    )
    assert [(n, p.product_id, p.price) for n, p in got] == [
        (1, "1", Decimal("65000")), (3, "2", Decimal("55000")), (4, "a:b", Decimal("1.10"))]


def test_bad_rows_say_where_and_why() -> None:
    got = dict(rows(
        '1:{"productId":"2","productName":"x","price":"1","stockQty":1}\n'
        '{"productId":"3","productName":"x","price":"abc","stockQty":1}\n'
        '{"productId":"4","productName":"x","price":"1","stockQty":-1}\n'
        '{"productId":"5","productName":"x","price":"1"}\n'
        "garbage\n"
        '{"productId":"6",\n'
        "7:\n"
        '{"productId":"bad id","productName":"x","price":"1","stockQty":1}\n'
        '{"productId":"9","productName":"x","price":"1","stockQty":1}\n'
    ))
    reasons = {n: r.reason.split(":")[0] for n, r in got.items() if isinstance(r, BadRow)}
    assert reasons == {1: "KEY_MISMATCH", 2: "INVALID_PRICE", 3: "WRONG_TYPE",
                       4: "MISSING_FIELD", 5: "INVALID_JSON", 6: "INVALID_JSON",
                       7: "INVALID_JSON", 8: "INVALID_ID"}
    assert got[9].product_id == "9"


def test_csv_with_header_quotes_and_bad_rows() -> None:
    got = rows(
        "\ufeffproductId,productName,price,stockQty\n"
        '1,"Phone, large",649.99,3\n'
        "2,Cable,x,1\n"
        "\n"
        "3,Short row\n"
        '4,"Two\nlines",1,1\n'
        "5,Fine,0,0\n"
    )
    assert got[0][0] == 2 and got[0][1].product_name == "Phone, large"
    assert got[0][1].price == Decimal("649.99") and got[0][1].stock_qty == 3
    assert isinstance(got[1][1], BadRow) and got[1][0] == 3 and "INVALID_PRICE" in got[1][1].reason
    assert isinstance(got[2][1], BadRow) and got[2][0] == 5
    assert got[3][1].product_name == "Two\nlines" and got[3][0] == 7  # the row's last line
    assert (got[4][0], got[4][1].product_id) == (8, "5")


def test_a_line_that_is_not_utf8_is_one_bad_row() -> None:
    raw = b'{"productId":"1","productName":"\xff","price":"1","stockQty":1}\n'
    got = list(parse_lines([raw.decode("utf-8", errors="surrogateescape")]))
    assert isinstance(got[0][1], BadRow) and "INVALID_ENCODING" in got[0][1].reason


def test_help_documents_formats_and_exit_status() -> None:
    result = cartstream("catalog", "load", "--help")
    out = result.stdout
    assert result.exit_code == 0
    assert "--dry-run" in out and "key:json" in out and "CSV" in out
    assert "Exit status" in out and "1  some rows were bad" in out


def test_a_full_local_queue_waits_serving_deliveries_and_loses_no_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from connectors import catalog
    from connectors.config import Config

    class QueueOfTwo:
        """A producer whose local queue holds two records until poll() delivers them."""

        def __init__(self, settings: dict[str, object]) -> None:
            self.queued: list[bytes] = []
            self.delivered: list[bytes] = []
            self.polls: list[float] = []

        def produce(self, topic: str, key: bytes, value: bytes, on_delivery: object) -> None:
            if len(self.queued) >= 2:
                raise BufferError("Local: Queue full")
            self.queued.append(key)

        def poll(self, timeout: float) -> int:
            self.polls.append(timeout)
            if timeout:  # only a real wait lets deliveries through in this fake
                self.delivered += self.queued
                self.queued = []
            return 0

        def flush(self, timeout: float) -> int:
            self.delivered += self.queued
            self.queued = []
            return 0

    built: list[QueueOfTwo] = []
    monkeypatch.setattr(catalog, "Producer", lambda s: built.append(QueueOfTwo(s)) or built[-1])
    lines = [f'{{"productId":"{i}","productName":"p","price":"1","stockQty":1}}\n'
             for i in range(5)]
    result = catalog.load_stream(lines, Config())
    assert result.loaded == 5 and result.bad == []
    assert built[0].delivered == [str(i).encode() for i in range(5)]
    assert [t for t in built[0].polls if t] and max(built[0].polls) <= 0.1


def test_prices_outside_the_money_range_are_refused_with_their_line() -> None:
    got = dict(rows(
        '{"productId":"1","productName":"x","price":"19.999","stockQty":1}\n'
        '{"productId":"2","productName":"x","price":0.005,"stockQty":1}\n'
        '{"productId":"3","productName":"x","price":"1000000000.01","stockQty":1}\n'
        '{"productId":"4","productName":"x","price":"-0.01","stockQty":1}\n'
        '{"productId":"5","productName":"x","price":"1000000000.00","stockQty":1}\n'
        '{"productId":"6","productName":"x","price":"19.990","stockQty":1}\n'
        '{"productId":"7","productName":"x","price":"1E+3","stockQty":1}\n'
    ))
    reasons = {n: r.reason for n, r in got.items() if isinstance(r, BadRow)}
    assert set(reasons) == {1, 2, 3, 4}
    assert all(r.startswith("INVALID_PRICE") for r in reasons.values())
    assert "2 decimals" in reasons[1] and "2 decimals" in reasons[2]
    assert [got[n].price for n in (5, 6, 7)] == [Decimal("1000000000"), Decimal("19.99"),
                                                Decimal("1000")]
