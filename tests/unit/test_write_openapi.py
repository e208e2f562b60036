"""The write API's OpenAPI document matches its routes and its validation rules (no I/O)."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from cart_write.app import create_app
from cart_write.config import Config
from cart_write.validation import COMMANDS, FIELDS
from tests.support.idempotency import MemoryIdempotencyStore

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


class Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError("serving the OpenAPI document must not publish or check anything")


@pytest.fixture(scope="module")
def app():
    return create_app(Config(), publisher=Untouchable(), catalog=Untouchable(),
                      idempotency=MemoryIdempotencyStore())


@pytest.fixture(scope="module")
def doc(app) -> dict[str, Any]:
    resp = app.test_client().get("/openapi.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    return orjson.loads(resp.data)


def test_every_route_is_documented_and_every_documented_route_exists(app, doc) -> None:
    routes = {(rule.rule, method.lower()) for rule in app.url_map.iter_rules()
              for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
              if rule.endpoint != "static"}
    documented = {(path, method) for path, item in doc["paths"].items() for method in item
                  if method in HTTP_METHODS}
    assert routes == documented


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_body_schema_has_exactly_the_accepted_fields(doc, name: str) -> None:
    schema = doc["paths"][f"/api/v1/{name}"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert set(schema["properties"]) == FIELDS[name]
    assert schema["additionalProperties"] is False


def test_every_reference_resolves(doc) -> None:
    refs = re.findall(rb'"\$ref":"#/components/schemas/([A-Za-z]+)"', orjson.dumps(doc))
    assert {r.decode() for r in refs} <= set(doc["components"]["schemas"])
    assert doc["openapi"].startswith("3.1")
