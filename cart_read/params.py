"""Request parameter parsing and opaque keyset cursors; pure functions, no I/O."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import orjson

from cart_contract import CHECKED_OUT, OPEN, ContractError, parse_id
from cart_contract.limits import AMOUNT_INT_DIGITS, PRICE_DECIMALS
from cart_read.config import Config
from cart_read.errors import ApiError

# Strict digits only: int() would also accept " 5", "+5" and "5_0".
_UINT_RE = re.compile(r"^[0-9]{1,19}$")
# numeric(14,2): at most 12 integer digits and 2 decimals.
# An amount: any cart total (cart_contract.limits) fits, with at most two decimals.
MONEY_PATTERN = rf"^[0-9]{{1,{AMOUNT_INT_DIGITS}}}(\.[0-9]{{1,{PRICE_DECIMALS}}})?$"
_MONEY_RE = re.compile(MONEY_PATTERN)
_INT64_MAX = 2**63 - 1
_CURSOR_MAX_LEN = 512

STATUSES = (OPEN, CHECKED_OUT)
SORT_CART_ID = "cartId"
SORT_TOTAL_PRICE = "totalPrice"
SORTS = (SORT_CART_ID, SORT_TOTAL_PRICE)

# Cursor kinds, so a cursor from one listing is refused by another.
KIND_ORDERS = "o"
KIND_CARTS_BY_ID = "c"
KIND_CARTS_BY_TOTAL = "t"
KIND_PRODUCTS = "p"



class Args(Protocol):
    """A request's query parameters (Starlette's QueryParams, Werkzeug's MultiDict)."""

    def __iter__(self) -> Any: ...

    def getlist(self, key: str) -> list[str]: ...


# The query parameters each route accepts (the OpenAPI test checks the document against them).
CART_QUERY = ("minOffset", "timeout")
# `ticket`: the secure profile's stream ticket (checked by the guard); `lastEventId`: resume
# where a client that cannot send the Last-Event-ID header left off.
STREAM_QUERY = ("ticket", "lastEventId")
PAGE_QUERY = ("limit", "cursor")
CARTS_QUERY = ("status", "minTotal", "maxTotal", "itemId", "sort", "limit", "cursor")


def bad(field: str, message: str, code: str = "INVALID_PARAMETER") -> ApiError:
    """A 400 for one parameter."""
    return ApiError(400, code, message, field)


def path_id(value: str, field: str) -> str:
    """A customerId/productId from the URL path, validated like the contract's ids."""
    try:
        return parse_id(value, field)
    except ContractError as exc:
        raise ApiError(400, exc.reason, exc.message, field) from None


def check_known(args: Args, allowed: Collection[str]) -> None:
    """Refuse unknown parameters (a typo like `minoffset` must not be silently ignored)."""
    for name in args:
        if name not in allowed:
            raise bad(name, f"unknown query parameter {name!r}", "UNKNOWN_PARAMETER")


def one(args: Args, name: str) -> str | None:
    """The single value of a parameter, None when absent; given twice is a 400."""
    values = args.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise bad(name, f"{name} given more than once")
    return values[0]


_INT32_MAX = 2**31 - 1


def uint(raw: str | None, name: str, minimum: int = 0, maximum: int = _INT64_MAX) -> int | None:
    """A non-negative decimal integer in [minimum, maximum], or None when absent."""
    if raw is None:
        return None
    if not _UINT_RE.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise bad(name, f"{name} must be an integer between {minimum} and {maximum}")
    return int(raw)


def money_param(raw: str | None, name: str) -> Decimal | None:
    """An amount like 100 or 99.50 (AMOUNT_INT_DIGITS integer digits, 2 decimals), or None."""
    if raw is None:
        return None
    if not _MONEY_RE.fullmatch(raw):
        raise bad(name, f"{name} must be an amount like 100 or 99.50")
    return Decimal(raw)


def limit_param(args: Args, config: Config) -> int:
    """Page size: 1..page_max, default page_default."""
    value = uint(one(args, "limit"), "limit", 1, config.page_max)
    return config.page_default if value is None else value


# What a cursor's text parts may hold: ids (cart_contract.ids) and decimal totals.
_CURSOR_TEXT = re.compile(r"[A-Za-z0-9._:@-]{1,64}")


def encode_cursor(kind: str, *key: Any) -> str:
    """An opaque cursor: url-safe base64 of the JSON array [kind, *key], unpadded."""
    raw = orjson.dumps([kind, *key])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(raw: str | None, kind: str, types: Sequence[type]) -> list[Any] | None:
    """The key inside a cursor made by encode_cursor(kind, ...); 400 INVALID_CURSOR otherwise."""
    if raw is None:
        return None
    invalid = bad("cursor", "cursor is not one this listing returned", "INVALID_CURSOR")
    if not raw or len(raw) > _CURSOR_MAX_LEN:
        raise invalid
    try:
        decoded = orjson.loads(base64.b64decode(raw + "=" * (-len(raw) % 4), b"-_", validate=True))
    except (binascii.Error, ValueError):
        raise invalid from None
    if not isinstance(decoded, list) or len(decoded) != len(types) + 1 or decoded[0] != kind:
        raise invalid
    key = decoded[1:]
    for value, typ in zip(key, types, strict=True):
        if isinstance(value, bool) or not isinstance(value, typ):
            raise invalid
        # Only ids and decimal strings go into a cursor; anything else (a NUL, which
        # PostgreSQL's text cannot hold, above all) was crafted.
        if typ is str and not _CURSOR_TEXT.fullmatch(value):
            raise invalid
    return key


@dataclass(frozen=True)
class CartParams:
    """GET /api/v1/<customerId>: read-your-write parameters (all None for a plain read).

    `minOffset` is a write's readToken `<partition>:<offset>`, or a bare offset that means the
    customer's partition (min_partition None). The token stays right after partitions are
    added, when a customer's new events go to another partition with smaller offsets.
    """

    min_offset: int | None
    timeout_s: float | None
    min_partition: int | None = None


_READ_TOKEN_RE = re.compile(r"([0-9]{1,10}):([0-9]{1,19})")


def cart_params(args: Args, config: Config) -> CartParams:
    """Parse minOffset/timeout; timeout (ms) defaults to wait_default_ms, capped at wait_max_ms."""
    check_known(args, CART_QUERY)
    raw = one(args, "minOffset")
    partition = None
    token = _READ_TOKEN_RE.fullmatch(raw) if raw is not None else None
    if token is not None:
        partition = uint(token.group(1), "minOffset", 0, _INT32_MAX)
        raw = token.group(2)
    min_offset = uint(raw, "minOffset")
    timeout_ms = uint(one(args, "timeout"), "timeout")
    if min_offset is None:
        if timeout_ms is not None:
            raise bad("timeout", "timeout only applies together with minOffset")
        return CartParams(None, None)
    if timeout_ms is None:
        timeout_ms = config.wait_default_ms
    return CartParams(min_offset, min(timeout_ms, config.wait_max_ms) / 1000, partition)


@dataclass(frozen=True)
class PageParams:
    """A plain keyset page: size and the key after which it starts."""

    limit: int
    after: list[Any] | None


def orders_params(args: Args, config: Config) -> PageParams:
    """GET /api/v1/<customerId>/orders: limit and cursor (a generation)."""
    check_known(args, PAGE_QUERY)
    return PageParams(limit_param(args, config),
                      decode_cursor(one(args, "cursor"), KIND_ORDERS, (int,)))


def products_params(args: Args, config: Config) -> PageParams:
    """GET /api/v1/products: limit and cursor (a productId)."""
    check_known(args, PAGE_QUERY)
    return PageParams(limit_param(args, config),
                      decode_cursor(one(args, "cursor"), KIND_PRODUCTS, (str,)))


@dataclass(frozen=True)
class CartQuery:
    """GET /api/v1/carts: filters, order and page."""

    status: str | None
    min_total: Decimal | None
    max_total: Decimal | None
    item_id: str | None
    sort: str
    limit: int
    after: list[Any] | None

    @property
    def cursor_kind(self) -> str:
        """The cursor kind matching this query's order."""
        return KIND_CARTS_BY_TOTAL if self.sort == SORT_TOTAL_PRICE else KIND_CARTS_BY_ID


def carts_params(args: Args, config: Config) -> CartQuery:
    """Parse and cross-check the carts query parameters."""
    check_known(args, CARTS_QUERY)
    status = one(args, "status")
    if status is not None and status not in STATUSES:
        raise bad("status", f"status must be one of {', '.join(STATUSES)}")
    min_total = money_param(one(args, "minTotal"), "minTotal")
    max_total = money_param(one(args, "maxTotal"), "maxTotal")
    if min_total is not None and max_total is not None and min_total > max_total:
        raise bad("minTotal", "minTotal must not exceed maxTotal")
    item_raw = one(args, "itemId")
    item_id = None if item_raw is None else path_id(item_raw, "itemId")
    sort = one(args, "sort")
    if sort is None:
        # A price range reads best in price order, and then uses the (total_price, cart_id) index.
        priced = min_total is not None or max_total is not None
        sort = SORT_TOTAL_PRICE if priced else SORT_CART_ID
    elif sort not in SORTS:
        raise bad("sort", f"sort must be one of {', '.join(SORTS)}")
    limit = limit_param(args, config)
    cursor = one(args, "cursor")
    if sort == SORT_TOTAL_PRICE:
        after = decode_cursor(cursor, KIND_CARTS_BY_TOTAL, (str, str))
        if after is not None and not _MONEY_RE.fullmatch(after[0]):
            raise bad("cursor", "cursor is not one this listing returned", "INVALID_CURSOR")
        if after is not None:
            after = [Decimal(after[0]), after[1]]
    else:
        after = decode_cursor(cursor, KIND_CARTS_BY_ID, (str,))
    return CartQuery(status, min_total, max_total, item_id, sort, limit, after)


def stream_params(args: Args, last_event_id: str | None) -> int:
    """GET /api/v1/<customerId>/events: the version the client has already (-1: none), from
    the Last-Event-ID header or else `lastEventId`."""
    check_known(args, STREAM_QUERY)
    raw = last_event_id if last_event_id is not None else one(args, "lastEventId")
    if raw is None or raw == "":
        return -1
    value = uint(raw.strip(), "lastEventId")
    assert value is not None
    return value
