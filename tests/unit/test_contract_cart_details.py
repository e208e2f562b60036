"""decode_cart_details reads with msgspec and falls back to orjson + the general checks: for every
input it must give what that general path alone gives (the result, or the error's reason and
field)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import cart_contract.cart_details as cart_details_module
from cart_contract import ContractError, decode_cart_details, encode_cart_details
from cart_contract._json import load_object
from cart_contract.cart_details import cart_details_from_dict

Members = list[tuple[bytes, Any]]  # a value is raw JSON bytes or a nested member list


def _reference(raw: Any) -> Any:
    """The reader as it was before the msgspec path: orjson, then every check."""
    return cart_details_from_dict(load_object(raw))


def _outcome(decode: Callable[[Any], Any], raw: object) -> tuple:
    try:
        cart = decode(raw)
    except ContractError as exc:
        return ("error", exc.reason, exc.field)
    except Exception as exc:  # any other failure must match too
        return ("raised", type(exc).__name__)
    return ("ok", cart)


def _same_as_reference(raw: object) -> tuple:
    expected = _outcome(_reference, raw)
    assert _outcome(decode_cart_details, raw) == expected, raw
    return expected


def _position(offset: bytes = b"7") -> Members:
    return [(b"eventId", b'"e-1"'), (b"partition", b"3"), (b"offset", offset)]


def _rejection() -> Members:
    return [(b"eventId", b'"e-0"'), (b"type", b'"CHECKOUT"'), (b"itemId", b"null"),
            (b"reason", b'"OUT_OF_STOCK"'), (b"itemIds", b'["1","x.y"]')]


def _line() -> Members:
    return [(b"itemId", b'"1"'), (b"itemName", b'"IPhone 12"'), (b"qty", b"2"),
            (b"unitPrice", b'"65000.00"'), (b"totalPrice", b'"130000.00"'),
            (b"priceChanged", b"true"), (b"addedPrice", b'"64000.00"')]


def _customer() -> Members:
    return [(b"version", b"9"), (b"lastEvent", _position(b"9")), (b"rejected", [_rejection()]),
            (b"updatedAt", b'"2026-11-22T10:00:00.000000Z"')]


def _record() -> Members:
    return [(b"customerId", b'"c-1"'), (b"cartId", b'"c-1:2"'), (b"status", b'"OPEN"'),
            (b"lineItems", [_line(), _line()[:5]]), (b"totalQty", b"2"),
            (b"totalPrice", b'"130000.00"'), (b"version", b"7"), (b"lastEvent", _position()),
            (b"rejected", []), (b"updatedAt", b'"2026-11-22T10:00:00.000000Z"'),
            (b"customer", _customer()), (b"schemaVersion", b"1")]


def _render(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if value and isinstance(value[0], tuple):  # members: an object
        return b"{" + b",".join(b'"%s":%s' % (k, _render(v)) for k, v in value) + b"}"
    return b"[" + b",".join(_render(v) for v in value) + b"]"


_ODD_VALUES = [
    b"null", b"true", b"0", b"-1", b"1.0", b"1e400", b"1" + b"0" * 400, b"9223372036854775807",
    b"9223372036854775808", b"18446744073709551616", b'""', b'"1"', b'"x\\n"', b'"a b"', b"[]",
    b"{}", b"[" * 1100 + b"]" * 1100, b'"\\ud800"', b'"\xff"', b'"\xed\xa0\x80"', b'"\xc3\xa9"',
    b'"%s"' % (b"x" * 65), b'"%s"' % (b"x" * 201), b'"OPEN"', b'"CHECKED_OUT"', b'"open"',
    b'"1.5"', b'"1E+3"', b'"NaN"', b'"Infinity"', b'"-0.01"', b'" 2 "', b'"1_0"', b'"c-1:x"',
    b'"c-2:1"', b'"c-1:"', b'"c-1:1:2"', b"12", b'["1"]', b"[1]", b"[{}]",
]


def _variants(members: Members, rewrap: Callable[[Members], bytes]) -> list[bytes]:
    """Each member dropped, changed, given before (a later key overrides it), or repeated
    after; unknown members added."""
    docs = [rewrap(members)]
    for i, (key, _) in enumerate(members):
        docs.append(rewrap(members[:i] + members[i + 1:]))
        for value in _ODD_VALUES:
            docs.append(rewrap(members[:i] + [(key, value)] + members[i + 1:]))
            docs.append(rewrap([(key, value)] + members))
            docs.append(rewrap(members + [(key, value)]))
    for key in (b"x", b"\\u0063ustomerId", b"\\ud800", b"\xff"):
        for value in (b"1", b"1e400", b'"\\ud800"', b'"\xff"', b"[" * 1100 + b"]" * 1100):
            docs.append(rewrap(members + [(key, value)]))
    return docs


def _single_changes() -> list[bytes]:
    """The record with one member changed at the top, in a line, the customer, a position or a
    rejection."""
    record = _record()

    def at(path: list[Any]) -> Callable[[Members], bytes]:
        def rewrap(members: Members) -> bytes:
            def put(value: Any, rest: list[Any]) -> Any:
                if not rest:
                    return members
                head = rest[0]
                if isinstance(head, int):
                    return [put(v, rest[1:]) if j == head else v for j, v in enumerate(value)]
                return [(k, put(v, rest[1:]) if k == head else v) for k, v in value]
            return _render(put(record, path))
        return rewrap

    def get(path: list[Any]) -> Members:
        value: Any = record
        for head in path:
            value = value[head] if isinstance(head, int) else dict(value)[head]
        return value

    docs: list[bytes] = []
    for path in ([], [b"lineItems", 0], [b"lineItems", 1], [b"lastEvent"], [b"customer"],
                 [b"customer", b"lastEvent"], [b"customer", b"rejected", 0]):
        docs += _variants(get(path), at(path))
    return docs


class _Bytes(bytes):
    pass


def test_a_record_in_the_aggregators_form_takes_the_fast_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _render(_record())
    cart = _reference(raw)
    assert encode_cart_details(cart) == raw  # exactly what the aggregator writes

    def general_path(raw: object) -> Any:
        raise AssertionError("took the general path")

    monkeypatch.setattr(cart_details_module, "load_object", general_path)
    assert decode_cart_details(raw) == cart == decode_cart_details(raw.decode())
    assert decode_cart_details(encode_cart_details(cart)) == cart
    assert cart.customer is not None and cart.customer.rejected[0].item_ids == ("1", "x.y")
    assert cart.line_items[0].added_price is not None and cart.line_items[1].added_price is None


def test_every_single_change_to_a_record_decodes_as_the_general_path() -> None:
    docs = _single_changes()
    outcomes = {_same_as_reference(raw)[0] for raw in docs}
    assert outcomes == {"ok", "error"}  # both sides of every check are reached
    for raw in docs[::7]:
        _same_as_reference(raw.decode("utf-8", "surrogateescape"))
        _same_as_reference(_Bytes(raw))


@pytest.mark.parametrize("raw", [
    b"", b"null", b"[]", b"1", b'"x"', b" \n", None, 5, bytearray(_render(_record())),
    memoryview(_render(_record())), _render(_record()) + b"x", b"\xef\xbb\xbf" + _render(_record()),
    b" \t\r\n" + _render(_record()) + b" \n", _render(_record())[:-1],
])
def test_edge_inputs_decode_as_the_general_path(raw: object) -> None:
    _same_as_reference(raw)
