"""The hot read, `GET /api/v1/<customerId>` with no query string, served without Flask.

Flask's request context, routing and response wrapping cost more CPU than the Redis read a
cached cart needs (about half a worker's time per read). This WSGI layer answers exactly
that request from `cart_response` (the function Flask's handler uses too) and hands every
other request, and every store failure, to the Flask app, so behaviour is the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from werkzeug import Response

from cart_contract.ids import ID_RE
from cart_read import queries
from cart_read.errors import StoreUnavailable
from cart_read.stores import Stores
from cart_web.errors import error_response, json_response
from cart_web.server import WsgiApp

PREFIX = "/api/v1/"
# Static routes under the prefix win over /api/v1/<customerId> in the Flask app too.
STATIC = frozenset({"carts", "products"})


def cart_response(stores: Stores, customer_id: str) -> Response:
    """The customer's current cart, or 404; raises StoreUnavailable when no store answers."""
    cart = queries.load_cart(stores, customer_id)
    if cart is None:
        return error_response(404, "NOT_FOUND", f"no cart for customer {customer_id}",
                              "customerId")
    return json_response(cart.doc, headers=etag(cart))


def etag(cart: queries.CartRead) -> dict[str, str] | None:
    """The ETag header of a cart read: the customer's version, what If-Match is compared with."""
    return {"ETag": f'"{cart.version}"'} if cart.version >= 0 else None


def with_fast_cart_reads(app: WsgiApp, stores: Stores) -> WsgiApp:
    """Wrap the Flask WSGI app so plain cart reads skip it."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET" and not environ.get("QUERY_STRING"):
            path: str = environ.get("PATH_INFO") or ""
            if path.startswith(PREFIX):
                customer_id = path[len(PREFIX):]
                if customer_id not in STATIC and ID_RE.fullmatch(customer_id):
                    try:
                        response = cart_response(stores, customer_id)
                    except StoreUnavailable:
                        pass  # Flask's error handler logs it and answers 503
                    else:
                        return response(environ, start_response)
        return app(environ, start_response)

    return wsgi
