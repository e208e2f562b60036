"""The dev profile's CORS on the write API: loopback pages (the cart page) and CORS_ORIGINS may
call it from a browser; other origins get no CORS headers and a refused preflight."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import Client

from cart_web.security import dev_cors, dev_origin_allowed, protect_write
from cart_web.settings import WriteSecurity


@pytest.mark.parametrize(("origin", "ok"), [
    ("http://127.0.0.1:7000", True),
    ("http://localhost:7000", True),
    ("http://localhost", True),
    ("http://[::1]:7000", True),
    ("http://shop.example", False),
    ("https://localhost:7000", False),
    ("http://localhost.evil.example", False),
    ("http://127.0.0.1.evil.example:7000", False),
    ("http://localhost:7000/path", False),
    ("null", False),
])
def test_dev_allows_loopback_pages(origin: str, ok: bool) -> None:
    assert dev_origin_allowed(origin, frozenset()) is ok


def test_dev_also_allows_listed_origins() -> None:
    assert dev_origin_allowed("https://shop.example", frozenset({"https://shop.example"}))


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("202 Accepted", [("Content-Type", "application/json")])
    return [b"{}"]


def client(listed: frozenset[str] = frozenset()) -> Client:
    return Client(dev_cors(_app, listed=listed, methods="POST"))


def test_a_loopback_preflight_is_answered_and_the_command_carries_the_origin() -> None:
    c = client()
    pre = c.options("/api/v1/add", headers={"Origin": "http://localhost:7000",
                                            "Access-Control-Request-Method": "POST",
                                            "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "http://localhost:7000"
    assert pre.headers["Access-Control-Allow-Methods"] == "POST"
    assert "Content-Type" in pre.headers["Access-Control-Allow-Headers"]
    resp = c.post("/api/v1/add", headers={"Origin": "http://localhost:7000"})
    assert resp.status_code == 202
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:7000"
    assert resp.headers["Vary"] == "Origin"


def test_a_foreign_origin_gets_no_cors() -> None:
    c = client()
    pre = c.options("/api/v1/add", headers={"Origin": "http://shop.example",
                                            "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 403
    assert pre.json["error"]["code"] == "ORIGIN_NOT_ALLOWED"
    assert "Access-Control-Allow-Origin" not in pre.headers
    resp = c.post("/api/v1/add", headers={"Origin": "http://shop.example"})
    assert resp.status_code == 202 and "Access-Control-Allow-Origin" not in resp.headers
    plain = c.post("/api/v1/add")
    assert plain.status_code == 202 and "Vary" not in plain.headers


def test_protect_write_in_dev_is_the_cors_layer_only() -> None:
    app = protect_write(_app, WriteSecurity(profile="dev"), redis_url="redis://unused",
                        key_prefix="")
    resp = Client(app).post("/api/v1/add", headers={"Origin": "http://127.0.0.1:7000",
                                                    "Authorization": "Bearer nonsense"})
    assert resp.status_code == 202
    assert resp.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:7000"
