"""The Flask app: thin handlers over validation, the catalog check and the publisher."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.http import parse_options_header
from werkzeug.wsgi import get_content_length

from cart_contract import ContractError, EventType, encode_cart_event, new_cart_event
from cart_web.auth import check_command
from cart_web.errors import api_error_response, internal_error_response
from cart_web.metrics import exposition
from cart_web.security import protect_write, with_security_scheme
from cart_web.server import buffered
from cart_write import metrics
from cart_write.catalog import Catalog, NoCatalog, RedisCatalog
from cart_write.config import Config
from cart_write.errors import (
    ApiError,
    contract_error_response,
    error_response,
    json_response,
    register_error_handlers,
)
from cart_write.fast import with_fast_commands
from cart_write.idempotency import (
    PENDING,
    IdempotencyStore,
    IdempotencyUnavailable,
    RedisIdempotencyStore,
    fingerprint,
)
from cart_write.openapi import build_openapi
from cart_write.publisher import ConfluentPublisher, Publisher, PublishUnavailable
from cart_write.validation import (
    COMMANDS,
    IDEMPOTENCY_ENVIRON,
    IDEMPOTENCY_HEADER,
    IF_MATCH_ENVIRON,
    Command,
    event_id_for,
    parse_body,
    parse_command,
    parse_idempotency_key,
    parse_if_match,
)

log = logging.getLogger("cart_write")


def accept_command(
    command: Command,
    idempotency_key: str | None,
    *,
    publisher: Publisher,
    catalog: Catalog,
    config: Config,
) -> dict[str, object]:
    """Check the product (when a catalog view exists), append the command's event, ack it.

    The 202 says the event is in the log, not that the cart changed: the fold decides that.
    """
    if command.event_type is EventType.ITEM_ADDED and command.item_id is not None:
        if catalog.knows(command.item_id) is False:
            raise ApiError(404, "UNKNOWN_PRODUCT",
                           f"product {command.item_id} is not in the catalog", "itemId")
    event = new_cart_event(
        command.event_type,
        command.customer_id,
        item_id=command.item_id,
        qty=command.qty,
        event_id=event_id_for(command, idempotency_key),
        expected_version=command.expected_version,
    )
    try:
        ack = publisher.publish(
            config.topic_cart_events, command.customer_id.encode(), encode_cart_event(event)
        )
    except PublishUnavailable as exc:
        raise ApiError(503, "KAFKA_UNAVAILABLE", str(exc),
                       headers={"Retry-After": str(config.retry_after_s)}) from exc
    return {
        "eventId": event.event_id,
        "type": event.type.value,
        "customerId": event.customer_id,
        "partition": ack.partition,
        "offset": ack.offset,
        # What `GET ?minOffset=` takes to read this write, whatever the partition count.
        "readToken": f"{ack.partition}:{ack.offset}",
    }


def accept_keyed_command(
    route: str,
    command: Command,
    key: str,
    *,
    store: IdempotencyStore,
    publisher: Publisher,
    catalog: Catalog,
    config: Config,
) -> Response:
    """A command with an Idempotency-Key: run once, then answer every retry from the record."""
    fields: dict[str, object] = {"customerId": command.customer_id, "itemId": command.item_id,
                                 "qty": command.qty}
    if command.expected_version is not None:
        # If-Match is part of the request: the same key with another expected version is
        # another request (422), not a retry. Absent, the fingerprint is what it always was.
        fields["ifMatch"] = command.expected_version
    fp = fingerprint(route, fields)
    retry_after = {"Retry-After": str(config.retry_after_s)}
    try:
        previous = store.begin(key, fp)
    except IdempotencyUnavailable as exc:
        log.warning("%s", exc)
        metrics.IDEMPOTENCY_OUTCOME[metrics.UNAVAILABLE].inc()
        raise ApiError(503, "IDEMPOTENCY_UNAVAILABLE",
                       "idempotency records cannot be reached; retry later, or send the "
                       "command without an Idempotency-Key", IDEMPOTENCY_HEADER,
                       headers=retry_after) from None
    if previous is not None:
        if previous.fingerprint != fp:
            metrics.IDEMPOTENCY_OUTCOME[metrics.REUSED].inc()
            raise ApiError(422, "IDEMPOTENCY_KEY_REUSED",
                           "this Idempotency-Key was used for a different request",
                           IDEMPOTENCY_HEADER)
        if previous.state == PENDING:
            metrics.IDEMPOTENCY_OUTCOME[metrics.IN_PROGRESS].inc()
            raise ApiError(409, "IDEMPOTENCY_KEY_IN_PROGRESS",
                           "a request with this Idempotency-Key is still in progress",
                           IDEMPOTENCY_HEADER, headers=retry_after)
        metrics.IDEMPOTENCY_OUTCOME[metrics.REPLAYED].inc()
        return json_response(previous.body, previous.status, {"Idempotent-Replayed": "true"})
    metrics.IDEMPOTENCY_OUTCOME[metrics.FIRST].inc()
    try:
        body = orjson.dumps(accept_command(command, key, publisher=publisher, catalog=catalog,
                                           config=config))
    except BaseException:
        # Nothing was acknowledged: free the key so that a retry runs again.
        try:
            store.abandon(key, fp)
        except IdempotencyUnavailable as exc:
            log.warning("%s (it expires by itself)", exc)
        raise
    try:
        store.complete(key, fp, 202, body)
    except IdempotencyUnavailable as exc:
        # The event is in the log, so the answer is still 202. A retry once the pending record
        # expires publishes again under the same eventId, which the aggregator drops.
        log.warning("%s", exc)
    return json_response(body, 202)


def read_body(environ: dict[str, Any], max_bytes: int) -> bytes:
    """The request body, or 413 when it is longer than `max_bytes` (chunked bodies too)."""
    length = get_content_length(environ)
    if length is not None:
        if length > max_bytes:
            raise ApiError(413, "PAYLOAD_TOO_LARGE", f"the body is larger than {max_bytes} bytes")
        # Read the input directly: Werkzeug's stream wrappers cost measurable time per request.
        return _read_up_to(environ["wsgi.input"], length)
    if not environ.get("wsgi.input_terminated"):
        return b""  # no length and a server that does not frame the body: nothing safe to read
    # A chunked body: Werkzeug's limit would cut it off silently, so read one byte past it.
    body = _read_up_to(environ["wsgi.input"], max_bytes + 1)
    if len(body) > max_bytes:
        raise ApiError(413, "PAYLOAD_TOO_LARGE", f"the body is larger than {max_bytes} bytes")
    return body


def _read_up_to(stream: Any, limit: int) -> bytes:
    """Up to `limit` bytes from a WSGI input stream (reads may return less than asked)."""
    chunks, size = [], 0
    while size < limit:
        chunk = stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def create_app(
    config: Config | None = None,
    *,
    publisher: Publisher | None = None,
    catalog: Catalog | None = None,
    idempotency: IdempotencyStore | None = None,
) -> Flask:
    """Build the write API; tests inject a fake publisher, catalog and idempotency store."""
    config = config or Config.from_env()
    if idempotency is None:
        idempotency = RedisIdempotencyStore.from_url(
            config.redis_url, timeout_s=config.redis_timeout_s,
            ttl_s=config.idempotency_ttl_s, pending_ttl_s=config.idempotency_pending_ttl_s,
            key_prefix=config.redis_key_prefix)
    if publisher is None:
        publisher = ConfluentPublisher(config)
    if catalog is None and config.catalog_check:
        catalog = RedisCatalog(config.redis_url, config.redis_timeout_s,
                               key_prefix=config.redis_key_prefix)
    elif catalog is None:
        catalog = NoCatalog()

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.extensions["cart_write"] = {"config": config, "publisher": publisher, "catalog": catalog}
    register_error_handlers(app)

    def command_response(name: str, environ: dict[str, Any]) -> Response:
        """Validate, check, publish; the 202 or the error, in the JSON shape."""
        try:
            mimetype = parse_options_header(environ.get("CONTENT_TYPE", ""))[0]
            doc = parse_body(read_body(environ, config.max_body_bytes), mimetype)
            command = parse_command(name, doc)
            check_command(environ, command.customer_id)  # secure profile: own cart only
            expected = parse_if_match(environ.get(IF_MATCH_ENVIRON))
            if expected is not None:
                command = replace(command, expected_version=expected)
            key = parse_idempotency_key(environ.get(IDEMPOTENCY_ENVIRON))
            if key is not None:
                return accept_keyed_command(name, command, key, store=idempotency,
                                            publisher=publisher, catalog=catalog,
                                            config=config)
            body = accept_command(
                command, key, publisher=publisher, catalog=catalog, config=config
            )
        # Answered here, not by Flask's handlers: the fast path (fast.py) has no Flask around it.
        except ApiError as err:
            return api_error_response(err)
        except ContractError as err:
            return contract_error_response(err)
        except Exception:
            return internal_error_response(log)
        return json_response(body, 202)

    def make_handler(name: str) -> Callable[[], Response]:
        def handle() -> Response:
            return command_response(name, request.environ)

        handle.__name__ = f"command_{name}"
        return handle

    for name in COMMANDS:
        app.add_url_rule(f"/api/v1/{name}", endpoint=name, view_func=make_handler(name),
                         methods=["POST"])

    openapi_doc = orjson.dumps(with_security_scheme(config, build_openapi(config)))

    @app.get("/openapi.json")
    def openapi() -> Response:
        return json_response(openapi_doc)

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok"}, 200)

    @app.get("/readyz")
    def readyz() -> Response:
        if publisher.ready():
            return json_response({"status": "ready", "profile": config.profile}, 200)
        return error_response(503, "KAFKA_UNAVAILABLE",
                              f"Kafka at {config.kafka_bootstrap} is not reachable",
                              headers={"Retry-After": str(config.retry_after_s)})

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        body, content_type = exposition()
        return Response(body, 200, content_type=content_type)

    # Commands skip Flask's per-request machinery (same function, same answers); every body
    # leaves as one buffer, so granian skips a Python iteration per response.
    app.wsgi_app = buffered(  # type: ignore[method-assign]
        with_fast_commands(app.wsgi_app, command_response))
    app.wsgi_app = protect_write(  # type: ignore[method-assign]
        app.wsgi_app, config, redis_url=config.redis_url, key_prefix=config.redis_key_prefix)
    if config.http_metrics:
        # Outermost: the secure profile's refusals (401, 403, 429) are counted too.
        app.wsgi_app = metrics.HTTP.wrap_wsgi(app.wsgi_app)  # type: ignore[method-assign]
    return app
