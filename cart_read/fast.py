"""The hot read, `GET /api/v1/<customerId>` with no query string, answered before the router.

Starlette's routing, request and exception layers cost more CPU than the Redis read a cached
cart needs. This ASGI layer answers exactly that request from `cart_response` (the function
the routed handler uses too) and hands every other request, and every store failure, to the
app, so behaviour is the same.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cart_contract.ids import ID_RE
from cart_read import queries
from cart_read.errors import StoreUnavailable
from cart_read.stores import Stores
from cart_web.asgi import error_response, json_response
from cart_web.errors import JSON

PREFIX = "/api/v1/"
_CONTENT_TYPE = (b"content-type", JSON.encode())
# Static routes under the prefix win over /api/v1/{customerId} in the router too.
STATIC = frozenset({"carts", "products"})


async def cart_response(stores: Stores, customer_id: str) -> Response:
    """The customer's current cart, or 404; raises StoreUnavailable when no store answers."""
    return cart_response_of(await queries.load_cart(stores, customer_id), customer_id)


def cart_response_of(cart: queries.CartRead | None, customer_id: str) -> Response:
    """The answer to a plain read of `customer_id` that found `cart`."""
    if cart is None:
        return error_response(404, "NOT_FOUND", f"no cart for customer {customer_id}",
                              "customerId")
    return json_response(cart.doc, headers=etag(cart))


def etag(cart: queries.CartRead) -> dict[str, str] | None:
    """The ETag header of a cart read: the customer's version, what If-Match is compared with."""
    return {"ETag": f'"{cart.version}"'} if cart.version >= 0 else None


def with_fast_cart_reads(app: ASGIApp, stores: Stores) -> ASGIApp:
    """Wrap the app so plain cart reads skip its router."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "GET"
                and not scope.get("query_string")):
            path: str = scope["path"]
            if path.startswith(PREFIX):
                customer_id = path[len(PREFIX):]
                if customer_id not in STATIC and ID_RE.fullmatch(customer_id):
                    try:
                        cart = await queries.load_cart(stores, customer_id)
                    except StoreUnavailable:
                        pass  # the app's handler logs it and answers 503
                    else:
                        if cart is None:
                            await cart_response_of(None, customer_id)(scope, receive, send)
                            return
                        # The found cart as cart_response answers it (same headers, same
                        # order), sent without building a Response: the document's bytes
                        # as Redis or PostgreSQL gave them.
                        doc = cart.doc
                        headers = [(b"content-length", b"%d" % len(doc)), _CONTENT_TYPE]
                        if cart.version >= 0:
                            headers.insert(0, (b"etag", b'"%d"' % cart.version))
                        await send({"type": "http.response.start", "status": 200,
                                    "headers": headers})
                        await send({"type": "http.response.body", "body": doc})
                        return
        await app(scope, receive, send)

    return asgi
