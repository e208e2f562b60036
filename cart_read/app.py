"""The read API's Flask app: thin handlers over queries.py and waiters.py."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis as redis_lib
from flask import Flask, Response, request

from cart_read import page, queries
from cart_read.config import Config
from cart_read.errors import ApiError, StoreUnavailable
from cart_read.fast import cart_response, etag, with_fast_cart_reads
from cart_read.openapi import build_openapi
from cart_read.params import (
    cart_params,
    carts_params,
    check_known,
    orders_params,
    path_id,
    products_params,
)
from cart_read.stores import Stores
from cart_read.waiters import CartWaiters, TooManyWaiters, wait_for_offset
from cart_web.errors import json_response, register_error_handlers
from cart_web.security import protect_read, with_security_scheme
from cart_web.server import buffered

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class ReadContext:
    """What the handlers share; kept on app.extensions["cart_read"] (tests look at it)."""

    config: Config
    stores: Stores
    waiters: CartWaiters


def _subscriber_factory(config: Config, injected: Any) -> Callable[[], Any]:
    if injected is not None:
        return lambda: injected

    def make() -> Any:
        # Its own client: a pub/sub connection idles for long, unlike the request pool's ones.
        return redis_lib.Redis.from_url(
            config.redis_url,
            socket_connect_timeout=config.redis_timeout_ms / 1000,
            socket_keepalive=True,
            health_check_interval=10,
        )

    return make


def create_app(
    config: Config | None = None,
    *,
    redis: Any = None,
    db_pool: Any = None,
    waiter: CartWaiters | None = None,
) -> Flask:
    """Build the app; redis/db_pool/waiter are injected by tests, else made lazily per process."""
    config = config or Config.from_env()
    stores = Stores(config, redis_client=redis, db_pool=db_pool)
    if waiter is None:
        waiter = CartWaiters(
            config.max_waiters,
            client_factory=_subscriber_factory(config, redis),
            channel=config.notify_channel,
        )
    ctx = ReadContext(config, stores, waiter)
    app = Flask("cart_read", static_folder=None)
    app.extensions["cart_read"] = ctx
    openapi_doc = orjson.dumps(with_security_scheme(config, build_openapi(config)))
    _register_errors(app)
    page.register(app, config)  # GET / and /static/*: the cart page

    @app.get("/healthz")
    def healthz() -> Response:
        check_known(request.args, ())
        return json_response({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Response:
        check_known(request.args, ())
        checks = {
            "redis": queries.ping_redis(stores),
            "postgres": queries.ping_postgres(stores, config.pg_timeout_ms / 1000),
        }
        failed = [reason for reason in checks.values() if reason is not None]
        report = {name: reason or "ok" for name, reason in checks.items()}
        if failed:
            raise ApiError(503, "NOT_READY", "; ".join(failed), headers={"Retry-After": "1"},
                           extra={"checks": report})
        return json_response({"status": "ready", "profile": config.profile, "checks": report})

    @app.get("/openapi.json")
    def openapi() -> Response:
        check_known(request.args, ())
        return json_response(openapi_doc)

    # Static routes win over /api/v1/<customerId>: customers "carts" and "products" can't be read.
    @app.get("/api/v1/carts")
    def list_carts() -> Response:
        q = carts_params(request.args, config)
        return json_response(queries.carts_page(stores.pool, q).body())

    @app.get("/api/v1/products")
    def list_products() -> Response:
        page = products_params(request.args, config)
        return json_response(queries.products_page(stores.pool, page).body())

    @app.get("/api/v1/products/<productId>")
    def get_product(productId: str) -> Response:  # noqa: N803 - the path names the parameter
        pid = path_id(productId, "productId")
        check_known(request.args, ())
        found = queries.product(stores.pool, pid)
        if found is None:
            raise ApiError(404, "NOT_FOUND", f"no product {pid}", "productId")
        return json_response(found)

    @app.get("/api/v1/<customerId>")
    def get_cart(customerId: str) -> Response:  # noqa: N803
        cid = path_id(customerId, "customerId")
        params = cart_params(request.args, config)
        if params.min_offset is None:
            return cart_response(stores, cid)
        assert params.timeout_s is not None
        outcome = wait_for_offset(
            lambda: queries.load_cart(stores, cid),
            waiter,
            cid,
            params.min_offset,
            params.timeout_s,
            poll_s=config.degraded_poll_ms / 1000,
            partition=params.min_partition,
        )
        if outcome.reached:
            return json_response(outcome.cart.doc, headers=etag(outcome.cart))
        cart = outcome.cart
        raise ApiError(
            504,
            "TIMEOUT",
            f"the cart did not reach {request.args['minOffset']} within "
            f"{int(params.timeout_s * 1000)} ms",
            "minOffset",
            extra={
                "version": None if cart is None else cart.version,
                "lastOffset": None if cart is None else cart.last_offset,
                "cart": None if cart is None else orjson.loads(cart.doc),
            },
        )

    @app.get("/api/v1/<customerId>/orders")
    def list_orders(customerId: str) -> Response:  # noqa: N803
        cid = path_id(customerId, "customerId")
        page = orders_params(request.args, config)
        return json_response(queries.orders_page(stores.pool, cid, page).body())

    # Plain cart reads skip Flask (fast.py); every body leaves as one buffer (cart_web.server).
    app.wsgi_app = buffered(with_fast_cart_reads(app.wsgi_app, stores))  # type: ignore[method-assign]
    # Secure profile: Host, CORS, token and limits before anything else (cart_web.security).
    app.wsgi_app = protect_read(  # type: ignore[method-assign]
        app.wsgi_app, config, redis_url=config.redis_url, key_prefix=config.redis_key_prefix,
        max_wait_s=config.wait_max_ms / 1000)
    return app


def _register_errors(app: Flask) -> None:
    register_error_handlers(app, log)

    @app.errorhandler(StoreUnavailable)
    def store_unavailable(exc: StoreUnavailable) -> Response:
        log.warning("store unavailable: %s", exc)
        err = ApiError(503, "STORE_UNAVAILABLE", "the cart stores cannot answer right now")
        return json_response(err.body(), 503, {"Retry-After": "1"})

    @app.errorhandler(TooManyWaiters)
    def too_many_waiters(exc: TooManyWaiters) -> Response:
        err = ApiError(503, "TOO_MANY_WAITERS", f"too many read-your-write requests: {exc}",
                       "minOffset")
        return json_response(err.body(), 503, {"Retry-After": "1"})
