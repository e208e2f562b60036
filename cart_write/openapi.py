"""The write API's OpenAPI 3.1 document (served at /openapi.json; a unit test keeps it in step
with the Flask url_map and the validation rules)."""

from __future__ import annotations

from typing import Any

from cart_contract import ID_RE, QTY_MAX, QTY_MIN
from cart_web.openapi import ERROR_SCHEMA
from cart_web.openapi import error as _error
from cart_web.openapi import json_response as _json
from cart_web.openapi import ref as _ref
from cart_write.config import Config
from cart_write.validation import (
    COMMANDS,
    FIELDS,
    IDEMPOTENCY_HEADER,
    IDEMPOTENCY_KEY_MAX,
    IF_MATCH_HEADER,
)

_ID = {"type": "string", "pattern": ID_RE.pattern,
       "description": "1-64 characters from [A-Za-z0-9._:@-] (a JSON integer is also taken, as "
       "its decimal string). `.`, `..` and, as customerId, `carts` and `products` are refused: "
       "the read API could not serve them back."}
_QTY = {"type": "integer", "minimum": QTY_MIN, "maximum": QTY_MAX}
_DESCRIPTIONS = {
    "add": "Add `qty` of a product to the customer's open cart (a new cart if none is open).",
    "remove": "Remove `qty` of a product from the open cart; without `qty`, the whole line.",
    "checkout": "Check the open cart out: it becomes an order.",
    "clear": "Empty the open cart.",
}


def _body_schema(name: str) -> dict[str, Any]:
    kind = COMMANDS[name]
    props: dict[str, Any] = {"customerId": _ID}
    required = ["customerId"]
    if "itemId" in FIELDS[name]:
        props["itemId"] = _ID
        required.append("itemId")
    if "qty" in FIELDS[name]:
        props["qty"] = _QTY if kind.qty_rule == "required" else {**_QTY, "type": ["integer",
                                                                                   "null"]}
        if kind.qty_rule == "required":
            required.append("qty")
    return {"type": "object", "required": required, "properties": props,
            "additionalProperties": False}


def _command(name: str) -> dict[str, Any]:
    kind = COMMANDS[name]
    return {
        "post": {
            "operationId": name,
            "summary": f"{kind.name}: appends a {kind.event_type.value} event",
            "description": _DESCRIPTIONS[name] + " Answers 202 once Kafka has stored the event; "
            "the aggregator may still reject it (the cart's `rejections` say why).",
            "parameters": [{
                "name": IDEMPOTENCY_HEADER, "in": "header", "required": False,
                "schema": {"type": "string", "pattern": f"^[!-~]{{1,{IDEMPOTENCY_KEY_MAX}}}$"},
                "description": "Makes retries safe: the same key and request answer the first "
                "202 again and write nothing; another request under the key is 422.",
            }, {
                "name": IF_MATCH_HEADER, "in": "header", "required": False,
                "schema": {"type": "string", "pattern": '^"(0|[1-9][0-9]{0,17})"$'},
                "description": "Optimistic concurrency: the ETag of `GET /api/v1/<customerId>` "
                "the command was decided on. The cart changes only if the customer's version is "
                "still that one; otherwise the aggregator rejects the command with "
                "`VERSION_CONFLICT` (read, decide, write with If-Match, read your write with "
                "`minOffset`). `0` for a customer with no cart yet. Part of the "
                "Idempotency-Key's request.",
            }],
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _body_schema(name)}}},
            "responses": {
                "202": _json(_ref("Accepted"), "Stored in Kafka."),
                "400": _error("Invalid body: bad JSON, a missing, unknown, duplicate or "
                              "invalid field, an invalid Idempotency-Key or If-Match."),
                "404": _error("The product is not in the catalog (add only)."),
                "409": _error("A request with this Idempotency-Key is still in progress.",
                              retry_after=True),
                "413": _error("The body is too large."),
                "415": _error("The body is not declared `application/json`."),
                "422": _error("This Idempotency-Key was used for a different request."),
                "503": _error("Kafka or the idempotency records cannot be reached.",
                              retry_after=True),
            },
        }
    }


def build_openapi(config: Config) -> dict[str, Any]:
    """The OpenAPI document of the write API."""
    paths: dict[str, Any] = {f"/api/v1/{name}": _command(name) for name in COMMANDS}
    status = {"type": "object", "required": ["status"],
              "properties": {"status": {"type": "string"},
                             "profile": {"type": "string", "enum": ["dev", "secure"]}}}
    paths["/healthz"] = {"get": {"operationId": "healthz", "summary": "Liveness",
                                 "responses": {"200": _json(status, "The process answers.")}}}
    paths["/readyz"] = {"get": {
        "operationId": "readyz", "summary": "Readiness: Kafka accepts writes",
        "responses": {"200": _json(status, "Ready."),
                      "503": _error("Kafka is not reachable.", retry_after=True)}}}
    paths["/metrics"] = {"get": {
        "operationId": "metrics", "summary": "Prometheus metrics (text format), summed over "
                                             "the server's workers",
        "responses": {"200": {"description": "The metrics.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}}}}
    paths["/openapi.json"] = {"get": {
        "operationId": "openapi", "summary": "This document",
        "responses": {"200": {"description": "The OpenAPI document.",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Cartstream write API", "version": "1",
                 "description": "Commands on shopping carts, appended to Kafka as events."},
        "servers": [{"url": f"http://{config.host}:{config.port}"}],
        "paths": paths,
        "components": {"schemas": {
            "Error": ERROR_SCHEMA,
            "Accepted": {
                "type": "object",
                "required": ["eventId", "type", "customerId", "partition", "offset",
                             "readToken"],
                "properties": {
                    "eventId": {"type": "string", "format": "uuid"},
                    "type": {"type": "string",
                             "enum": [k.event_type.value for k in COMMANDS.values()]},
                    "customerId": {"type": "string"},
                    "partition": {"type": "integer", "minimum": 0},
                    "offset": {"type": "integer", "minimum": 0},
                    "readToken": {"type": "string", "pattern": "^[0-9]+:[0-9]+$",
                                  "description": "Pass as `minOffset` to the read API to "
                                  "read this write."},
                },
                "additionalProperties": False,
            },
        }},
    }
