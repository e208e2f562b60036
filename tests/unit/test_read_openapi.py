"""The served OpenAPI document matches the app's routes and their parameters (no I/O)."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from cart_read.app import create_app
from cart_read.config import Config
from cart_read.params import CART_QUERY, CARTS_QUERY, PAGE_QUERY, STREAM_QUERY
from cart_read.waiters import CartWaiters
from tests.support.read_client import ReadClient, mimetype

IMPLICIT = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
# What each route's handler accepts in its query string (the handlers use these constants).
QUERY = {
    "/api/v1/{customerId}": CART_QUERY,
    "/api/v1/{customerId}/orders": PAGE_QUERY,
    "/api/v1/carts": CARTS_QUERY,
    "/api/v1/products": PAGE_QUERY,
    "/api/v1/{customerId}/events": STREAM_QUERY,
}


class Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError("serving the OpenAPI document must not touch a store")


@pytest.fixture(scope="module")
def app():
    return create_app(Config(), redis=Untouchable(), db_pool=Untouchable(),
                      waiter=CartWaiters(1))


@pytest.fixture(scope="module")
def doc(app) -> dict[str, Any]:
    with ReadClient(app) as client:
        resp = client.get("/openapi.json")
    assert resp.status_code == 200 and mimetype(resp) == "application/json"
    return orjson.loads(resp.content)


def test_every_route_is_documented_and_every_documented_route_exists(app, doc) -> None:
    routes = {
        (route.path, method.lower())
        for route in app.routes
        for method in (route.methods or set()) - IMPLICIT
    }
    documented = {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert routes == documented


def test_path_parameters_match_the_route_variables(app, doc) -> None:
    for route in app.routes:
        for method, op in doc["paths"][route.path].items():
            in_path = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert in_path == set(route.param_convertors), (route.path, method)


def test_query_parameters_match_what_the_handlers_accept(doc) -> None:
    for path, item in doc["paths"].items():
        for op in item.values():
            in_query = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
            assert in_query == set(QUERY.get(path, ())), path


def test_every_reference_resolves(doc) -> None:
    refs = re.findall(rb'"\$ref":"#/components/schemas/([A-Za-z]+)"', orjson.dumps(doc))
    assert refs
    assert {r.decode() for r in refs} <= set(doc["components"]["schemas"])


def test_document_basics(doc) -> None:
    assert doc["openapi"].startswith("3.1")
    for item in doc["paths"].values():
        for op in item.values():
            assert "200" in op["responses"]
            assert op["operationId"]
