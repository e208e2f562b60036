"""The read API's Starlette app (ASGI, served by granian): thin handlers over queries.py,
waiters.py and stream.py."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from cart_read import metrics, queries, tickets
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
    stream_params,
)
from cart_read.stores import Stores
from cart_read.stream import CartStream
from cart_read.waiters import CartWaiters, TooManyWaiters, wait_for_offset
from cart_web.asgi import exception_handlers, json_response, principal_of, protect_read
from cart_web.auth import Principal, check_owner
from cart_web.security import with_security_scheme

log = logging.getLogger(__name__)


@dataclass
class ReadContext:
    """What the handlers share; kept on app.state.cart_read (tests look at it)."""

    config: Config
    stores: Stores
    waiters: CartWaiters
    # Set at shutdown: open streams end instead of holding the worker until it is killed.
    closing: asyncio.Event = field(default_factory=asyncio.Event)


def _subscriber_factory(config: Config, injected: Any) -> Callable[[], Any] | None:
    if injected is not None:
        # An injected fake store has no pub/sub: tests call notify() themselves.
        return None

    def make() -> Any:
        # Its own client: a pub/sub connection idles for long, unlike the request pool's ones.
        return aioredis.Redis.from_url(
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
) -> Starlette:
    """Build the app; redis/db_pool/waiter are injected by tests, else made lazily per loop."""
    config = config or Config.from_env()
    stores = Stores(config, redis_client=redis, db_pool=db_pool)
    if waiter is None:
        waiter = CartWaiters(
            config.max_waiters,
            client_factory=_subscriber_factory(config, redis),
            channel=config.notify_channel,
        )
    ctx = ReadContext(config, stores, waiter)
    openapi_doc = orjson.dumps(with_security_scheme(config, build_openapi(config)))

    async def healthz(request: Request) -> Response:
        check_known(request.query_params, ())
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        check_known(request.query_params, ())
        checks = {
            "redis": await queries.ping_redis(stores),
            "postgres": await queries.ping_postgres(stores, config.pg_timeout_ms / 1000),
        }
        failed = [reason for reason in checks.values() if reason is not None]
        report = {name: reason or "ok" for name, reason in checks.items()}
        if failed:
            raise ApiError(503, "NOT_READY", "; ".join(failed), headers={"Retry-After": "1"},
                           extra={"checks": report})
        return json_response({"status": "ready", "profile": config.profile, "checks": report})

    async def openapi(request: Request) -> Response:
        check_known(request.query_params, ())
        return json_response(openapi_doc)

    async def metrics_text(request: Request) -> Response:
        check_known(request.query_params, ())
        body, content_type = metrics.exposition()
        return Response(body, 200, media_type=content_type)

    async def list_carts(request: Request) -> Response:
        q = carts_params(request.query_params, config)
        return json_response((await queries.carts_page(await stores.db(), q)).body())

    async def list_products(request: Request) -> Response:
        page = products_params(request.query_params, config)
        return json_response((await queries.products_page(await stores.db(), page)).body())

    async def get_product(request: Request) -> Response:
        pid = path_id(request.path_params["productId"], "productId")
        check_known(request.query_params, ())
        found = await queries.product(await stores.db(), pid)
        if found is None:
            raise ApiError(404, "NOT_FOUND", f"no product {pid}", "productId")
        return json_response(found)

    async def get_cart(request: Request) -> Response:
        cid = path_id(request.path_params["customerId"], "customerId")
        params = cart_params(request.query_params, config)
        if params.min_offset is None:
            return await cart_response(stores, cid)
        assert params.timeout_s is not None
        with metrics.WAITERS.track_inprogress():
            outcome = await wait_for_offset(
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
            f"the cart did not reach {request.query_params['minOffset']} within "
            f"{int(params.timeout_s * 1000)} ms",
            "minOffset",
            extra={
                "version": None if cart is None else cart.version,
                "lastOffset": None if cart is None else cart.last_offset,
                "cart": None if cart is None else orjson.loads(cart.doc),
            },
        )

    async def list_orders(request: Request) -> Response:
        cid = path_id(request.path_params["customerId"], "customerId")
        page = orders_params(request.query_params, config)
        return json_response((await queries.orders_page(await stores.db(), cid, page)).body())

    async def cart_events(request: Request) -> CartStream:
        cid = path_id(request.path_params["customerId"], "customerId")
        last_version = stream_params(request.query_params, request.headers.get("last-event-id"))
        return CartStream(ctx, cid, last_version)

    async def stream_ticket(request: Request) -> Response:
        cid = path_id(request.path_params["customerId"], "customerId")
        check_known(request.query_params, ())
        # Streams are the customer's own: an admin token reads carts, it gets no ticket.
        check_owner(principal_of(request), cid, admin_allowed=False)
        ticket = await tickets.issue(stores.redis, cid, config.stream_ticket_ttl_s,
                                     config.redis_key_prefix)
        return json_response({"ticket": ticket, "expiresInS": config.stream_ticket_ttl_s,
                              "url": f"/api/v1/{cid}/events?{tickets.TICKET_PARAM}={ticket}"})

    # Static routes first: customers "carts" and "products" can't be read.
    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
        Route("/api/v1/carts", list_carts, methods=["GET"]),
        Route("/api/v1/products", list_products, methods=["GET"]),
        Route("/api/v1/products/{productId}", get_product, methods=["GET"]),
        Route("/api/v1/{customerId}", get_cart, methods=["GET"]),
        Route("/api/v1/{customerId}/orders", list_orders, methods=["GET"]),
        Route("/api/v1/{customerId}/events", cart_events, methods=["GET"]),
        Route("/api/v1/{customerId}/events/ticket", stream_ticket, methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        ctx.closing.clear()
        waiter.ensure_subscriber()  # subscribed before the first wait, not by it
        try:
            yield
        finally:
            ctx.closing.set()
            waiter.wake_all()
            await waiter.close()
            await stores.close()
            metrics.process_exited()

    handlers = exception_handlers(log)

    async def store_unavailable(_request: Request, exc: Exception) -> Response:
        log.warning("store unavailable: %s", exc)
        err = ApiError(503, "STORE_UNAVAILABLE", "the cart stores cannot answer right now")
        return json_response(err.body(), 503, {"Retry-After": "1"})

    async def too_many_waiters(_request: Request, exc: Exception) -> Response:
        err = ApiError(503, "TOO_MANY_WAITERS", f"too many open waits and streams: {exc}",
                       "minOffset")
        return json_response(err.body(), 503, {"Retry-After": "1"})

    handlers[StoreUnavailable] = store_unavailable
    handlers[TooManyWaiters] = too_many_waiters

    async def alt_auth(scope: Scope, path: str) -> Principal | None:
        return await tickets.principal_for_stream(scope, path, stores.redis,
                                                  config.redis_key_prefix)

    # Outermost first: metrics count every answer; the secure profile's guard (Host, CORS,
    # token or stream ticket, limits) before anything else; plain cart reads skip the router.
    middleware = [
        Middleware(metrics.with_metrics),
        Middleware(protect_read, config, redis_url=config.redis_url,
                   key_prefix=config.redis_key_prefix, max_wait_s=config.wait_max_ms / 1000,
                   alt_auth=alt_auth),
        Middleware(with_fast_cart_reads, stores),
    ]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers,
                    lifespan=lifespan)
    # Flask's rule, kept: /api/v1/123/ is not /api/v1/123 (404, no redirect).
    app.router.redirect_slashes = False
    app.state.cart_read = ctx
    _register_page(app)
    return app


def _register_page(app: Starlette) -> None:
    """The browser page (`GET /`, `/static/*`) when cart_read.page exists: it registers its
    own routes with `register(app)` (branch `page`)."""
    if importlib.util.find_spec("cart_read.page") is not None:
        from cart_read import page  # type: ignore[attr-defined]

        page.register(app)
