"""The read API's OpenAPI 3.1 document (served at /openapi.json; a unit test keeps it in step
with the app's routes)."""

from __future__ import annotations

from typing import Any

from cart_contract import ID_RE
from cart_contract.layout import UPDATES_CHANNEL
from cart_contract.limits import CART_TOTAL_MAX, LINE_QTY_MAX, LINES_MAX, PRICE_MAX
from cart_read import page
from cart_read.config import Config
from cart_read.params import MONEY_PATTERN, SORTS, STATUSES
from cart_web.openapi import ERROR_SCHEMA
from cart_web.openapi import error as _error
from cart_web.openapi import json_response as _json
from cart_web.openapi import ref as _ref

_ID_PATTERN = ID_RE.pattern


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _path_id(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "pattern": _ID_PATTERN}, "description": description}


def _page(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "nextCursor"],
        "properties": {
            "items": {"type": "array", "items": _ref(item)},
            "nextCursor": {
                "type": ["string", "null"],
                "description": "Opaque; pass as `cursor` for the next page. null on the last page.",
            },
        },
    }


def build_openapi(config: Config) -> dict[str, Any]:
    """The OpenAPI document, with the limits of this configuration."""
    limit = _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": config.page_max,
         "default": config.page_default},
        "Page size.",
    )
    cursor = _query("cursor", {"type": "string"},
                    "The `nextCursor` of the previous page (opaque).")
    bad = _error("Invalid or unknown parameter (unknown query parameters are refused).")
    unavailable = _error("The stores cannot answer right now; retry after `Retry-After`.")
    money = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2}$", "examples": ["195000.00"],
             "description": f"Exact, two decimals; a price is at most {PRICE_MAX}, a cart "
                            f"total at most {CART_TOTAL_MAX} ({LINES_MAX} lines of at most "
                            f"{LINE_QTY_MAX} units)."}
    position = {
        "type": "object",
        "required": ["eventId", "partition", "offset"],
        "properties": {
            "eventId": {"type": "string"},
            "partition": {"type": "integer"},
            "offset": {"type": "integer"},
        },
    }
    rejections = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "eventId": {"type": "string"},
                "type": {"type": "string"},
                "itemId": {"type": ["string", "null"]},
                "reason": {"type": "string", "examples": [
                    "UNKNOWN_PRODUCT", "INSUFFICIENT_STOCK", "NOT_IN_CART", "NO_OPEN_CART",
                    "EMPTY_CART", "CART_LIMIT", "VERSION_CONFLICT"]},
            },
        },
    }
    schemas: dict[str, Any] = {
        "Error": ERROR_SCHEMA,
        "LineItem": {
            "type": "object",
            "required": ["itemId", "itemName", "qty", "unitPrice", "totalPrice"],
            "properties": {
                "itemId": {"type": "string"},
                "itemName": {"type": "string"},
                "qty": {"type": "integer"},
                "unitPrice": money,
                "totalPrice": money,
            },
        },
        "CartDetails": {
            "type": "object",
            "description": (
                "The aggregator's cart document (cart_contract). The top level is the cart: the "
                "open one, or the last order, whose lines, totals, version, lastEvent, "
                "rejected and updatedAt never change after its checkout. `customer` (in the "
                "customer's GET only) is where the customer is now: its version (the ETag, "
                "what If-Match is compared with) and last event (what minOffset waits for) "
                "advance with every command, its `rejected` lists its last rejections in any "
                "cart or none (e.g. NO_OPEN_CART after the checkout)."),
            "required": ["customerId", "cartId", "status", "lineItems", "totalQty",
                         "totalPrice", "version", "lastEvent", "updatedAt"],
            "properties": {
                "customerId": {"type": "string"},
                "cartId": {"type": "string", "description": "customerId:generation"},
                "status": {"type": "string", "enum": list(STATUSES)},
                "lineItems": {"type": "array", "items": _ref("LineItem")},
                "totalQty": {"type": "integer"},
                "totalPrice": money,
                "version": {"type": "integer"},
                "lastEvent": position,
                "rejected": rejections,
                "updatedAt": {"type": "string", "format": "date-time"},
                "customer": {
                    "type": "object",
                    "required": ["version", "lastEvent", "rejected", "updatedAt"],
                    "properties": {
                        "version": {"type": "integer"},
                        "lastEvent": position,
                        "rejected": rejections,
                        "updatedAt": {"type": "string", "format": "date-time"},
                    },
                },
                "schemaVersion": {"type": "integer"},
            },
        },
        "Product": {
            "type": "object",
            "required": ["productId", "productName", "price", "stockQty"],
            "properties": {
                "productId": {"type": "string"},
                "productName": {"type": "string"},
                "price": {"type": "string", "examples": ["65000.00"]},
                "stockQty": {"type": "integer",
                             "description": "the warehouse count (the catalog's)"},
                "reserved": {"type": "integer",
                             "description": "units reserved by checkouts that got their order"},
                "available": {"type": "integer",
                              "description": "stockQty - reserved, not below 0"},
                "schemaVersion": {"type": "integer"},
            },
        },
        "CartPage": _page("CartDetails"),
        "ProductPage": _page("Product"),
        "Timeout": {
            "allOf": [_ref("Error")],
            "type": "object",
            "properties": {
                "version": {"type": ["integer", "null"]},
                "lastOffset": {"type": ["integer", "null"]},
                "cart": {"oneOf": [_ref("CartDetails"), {"type": "null"}]},
            },
        },
        "Health": {
            "type": "object",
            "properties": {
                "status": {"type": "string"},
                "profile": {"type": "string", "enum": ["dev", "secure"]},
                "checks": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "StreamTicket": {
            "type": "object",
            "required": ["ticket", "expiresInS", "url"],
            "properties": {
                "ticket": {"type": "string"},
                "expiresInS": {"type": "integer"},
                "url": {"type": "string", "description": "The stream's path with the ticket."},
            },
        },
    }
    customer = _path_id(
        "customerId",
        "The customer. `carts` and `products` are taken by the static routes "
        "`/api/v1/carts` and `/api/v1/products`, which win: those two customer ids cannot be "
        "read through this path.",
    )
    paths: dict[str, Any] = {
        "/healthz": {"get": {
            "summary": "Liveness (no I/O).",
            "operationId": "healthz",
            "responses": {"200": _json(_ref("Health"), "Alive.")},
        }},
        "/readyz": {"get": {
            "summary": "Readiness: Redis answers PING and PostgreSQL answers SELECT 1.",
            "operationId": "readyz",
            "responses": {
                "200": _json(_ref("Health"), "Both stores reachable."),
                "503": _error("A store is unreachable (`checks` says which)."),
            },
        }},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (text format), of every worker process.",
            "operationId": "metrics",
            "responses": {"200": {"description": "Requests by route and status, latency "
                                                 "histograms, open waiters and streams.",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}}},
        }},
        "/openapi.json": {"get": {
            "summary": "This document.",
            "operationId": "openapi",
            "responses": {"200": {"description": "OpenAPI 3.1 document.",
                                  "content": {"application/json": {}}}},
        }},
        "/api/v1/{customerId}": {"get": {
            "summary": "The customer's current cart (open, or the last checked-out one).",
            "description": (
                "Read from Redis; on a miss or while Redis is down from PostgreSQL (the "
                "customer's current record), re-warming Redis with a version-guarded "
                "compare-and-set. The `ETag` is the customer's version (`customer.version`): "
                "send it as `If-Match` with a command to have it applied only if nothing "
                "happened in between (else it is rejected `VERSION_CONFLICT`). With "
                "`minOffset` (read your own write) the request waits until the customer's "
                "`customer.lastEvent` is at that partition and at least that offset "
                "(a bare offset: any partition), woken by the sink's "
                f"`{UPDATES_CHANNEL}` notifications, and answers 504 after `timeout`."
            ),
            "operationId": "getCart",
            "parameters": [
                customer,
                _query("minOffset", {"type": "string", "pattern": "^([0-9]{1,10}:)?[0-9]{1,18}$",
                                     "examples": ["5:4", "4"]},
                       "The `readToken` (`<partition>:<offset>`) of the write API's 202, or its "
                       "bare `offset`: wait until the cart has that write."),
                _query("timeout",
                       {"type": "integer", "minimum": 0, "default": config.wait_default_ms},
                       f"Wait at most this many ms (only with minOffset; values above "
                       f"{config.wait_max_ms} are capped)."),
            ],
            "responses": {
                "200": _json(_ref("CartDetails"), "The cart.", {"ETag": {
                    "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
                    "description": "The customer's version, quoted: the If-Match of a command "
                                   "decided on this read."}}),
                "400": bad,
                "404": _error("No cart for this customer."),
                "503": _error("Stores unavailable, or the process's safety cap of open "
                              "waits and streams is reached (`TOO_MANY_WAITERS`); see "
                              "`Retry-After`."),
                "504": _json(_ref("Timeout"),
                             "minOffset not reached in time; carries the version it has."),
            },
        }},
        "/api/v1/{customerId}/orders": {"get": {
            "summary": "The customer's checked-out carts, newest first.",
            "description": "Each order as it was at its checkout, for ever (no `customer` "
                           "part: what happens to the customer afterwards is in its GET).",
            "operationId": "listOrders",
            "parameters": [customer, limit, cursor],
            "responses": {"200": _json(_ref("CartPage"), "A page (empty for an unknown "
                                       "customer)."),
                          "400": bad, "503": unavailable},
        }},
        "/api/v1/{customerId}/events": {"get": {
            "summary": "The customer's cart as a Server-Sent Events stream.",
            "description": (
                "`text/event-stream`: first `retry:` (ms), then the current cart at once, then "
                "each newer version as it lands (woken by the sink's "
                f"`{UPDATES_CHANNEL}` notifications). Each event's `id:` is the customer's "
                "version (the ETag) and its `data:` the cart document (one line of JSON, the "
                "body of `GET /api/v1/{customerId}`). Reconnecting with `Last-Event-ID` (an "
                "EventSource does so by itself) sends only newer versions: no duplicates, and "
                "never a missed state (each event is the whole cart; versions landing "
                "together arrive as the newest). A comment line is sent every "
                f"{config.stream_heartbeat_s:g} s while nothing changes. An unknown customer's "
                "stream stays open and sends its first cart when there is one. In the secure "
                "profile: the customer's own bearer token, or (EventSource cannot send "
                "headers) `ticket` from `POST /api/v1/{customerId}/events/ticket`."
            ),
            "operationId": "streamCart",
            "parameters": [
                customer,
                _query("ticket", {"type": "string"},
                       "Secure profile: a stream ticket instead of the bearer token."),
                _query("lastEventId", {"type": "string", "pattern": "^[0-9]{1,19}$"},
                       "The version the client has (as the `Last-Event-ID` header, which "
                       "wins when both are given)."),
            ],
            "responses": {
                "200": {"description": "The event stream (ends when the client leaves).",
                        # One event (OpenAPI 3.2's SSE item): `data` is the cart document.
                        "content": {"text/event-stream": {"schema": {
                            "type": "object", "required": ["data"],
                            "properties": {"data": {"type": "string",
                                                    "contentMediaType": "application/json"},
                                           "id": {"type": "string"},
                                           "event": {"type": "string"},
                                           "retry": {"type": "integer"}}}}}},
                "400": bad,
                "503": _error("Too many waits and streams open in this process "
                              "(`TOO_MANY_WAITERS`); see `Retry-After`."),
            },
        }},
        "/api/v1/{customerId}/events/ticket": {"post": {
            "summary": "A short-lived ticket that opens this customer's event stream.",
            "description": (
                "For browsers (EventSource cannot send `Authorization`): trade the customer's "
                "own bearer token (not an admin's) for a ticket valid "
                f"{config.stream_ticket_ttl_s} s, then open `url`. Only the ticket's hash is "
                "stored; no log line holds it."
            ),
            "operationId": "createStreamTicket",
            "parameters": [customer],
            "responses": {
                "200": _json(_ref("StreamTicket"), "The ticket."),
                "400": bad,
                "503": _error("Redis cannot store the ticket; see `Retry-After`."),
            },
        }},
        "/api/v1/carts": {"get": {
            "summary": "Query carts in PostgreSQL (keyset pagination).",
            "description": (
                "Ordered by `cartId`, or by (`totalPrice`, `cartId`) with `sort=totalPrice` — "
                "the default when `minTotal` or `maxTotal` is given. A cursor is only valid "
                "with the same order."
            ),
            "operationId": "queryCarts",
            "parameters": [
                _query("status", {"type": "string", "enum": list(STATUSES)}, "Cart status."),
                _query("minTotal", {"type": "string", "pattern": MONEY_PATTERN},
                       "totalPrice >= this amount."),
                _query("maxTotal", {"type": "string", "pattern": MONEY_PATTERN},
                       "totalPrice <= this amount."),
                _query("itemId", {"type": "string", "pattern": _ID_PATTERN},
                       "Only carts with a line for this item."),
                _query("sort", {"type": "string", "enum": list(SORTS)}, "Order of the results."),
                limit,
                cursor,
            ],
            "responses": {"200": _json(_ref("CartPage"), "A page of carts."),
                          "400": bad, "503": unavailable},
        }},
        "/api/v1/products": {"get": {
            "summary": "The catalog as landed in PostgreSQL (deleted products excluded).",
            "operationId": "listProducts",
            "parameters": [limit, cursor],
            "responses": {"200": _json(_ref("ProductPage"), "A page of products by productId."),
                          "400": bad, "503": unavailable},
        }},
        "/api/v1/products/{productId}": {"get": {
            "summary": "One product.",
            "operationId": "getProduct",
            "parameters": [_path_id("productId", "The product.")],
            "responses": {"200": _json(_ref("Product"), "The product."),
                          "400": bad, "404": _error("Unknown or deleted product."),
                          "503": unavailable},
        }},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cartstream read API",
            "version": "1.0.0",
            "description": (
                "Carts, orders, cart queries and the catalog. Errors are "
                "`{\"error\": {\"code\", \"message\", \"field\"}}`; unknown paths answer 404 "
                "and wrong methods 405 in the same shape."
            ),
        },
        "servers": [{"url": f"http://{config.host}:{config.port}"}],
        "paths": {**paths, **page.openapi_paths()},
        "components": {"schemas": schemas},
    }
