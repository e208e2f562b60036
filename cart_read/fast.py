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

PREFIX = "/api/v1/"
# Static routes under the prefix win over /api/v1/{customerId} in the router too.
STATIC = frozenset({"carts", "products"})


async def cart_response(stores: Stores, customer_id: str) -> Response:
    """The customer's current cart, or 404; raises StoreUnavailable when no store answers."""
    cart = await queries.load_cart(stores, customer_id)
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
                        response = await cart_response(stores, customer_id)
                    except StoreUnavailable:
                        pass  # the app's handler logs it and answers 503
                    else:
                        await response(scope, receive, send)
                        return
        await app(scope, receive, send)

    return asgi
