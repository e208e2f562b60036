"""The cart page's server side: the HTML, its escaping, where commands go, static files, and
registration on Flask and Starlette apps."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.testclient import TestClient

from cart_read import page
from cart_read.app import create_app
from cart_read.config import Config
from cart_read.waiters import CartWaiters
from tests.support.read_client import ReadClient


@pytest.mark.parametrize(("host", "name"), [
    ("localhost:7000", "localhost"),
    ("127.0.0.1", "127.0.0.1"),
    ("[::1]:7000", "[::1]"),
    ("shop.example", "shop.example"),
    (None, "127.0.0.1"),
    ("", "127.0.0.1"),
    ('evil"><script>:7000', "127.0.0.1"),
    ("a b", "127.0.0.1"),
    ("x;script-src *", "127.0.0.1"),
])
def test_host_name_takes_only_a_plain_name(host: str | None, name: str) -> None:
    assert page.host_name(host) == name


def test_commands_go_to_the_pages_host_on_the_write_port_unless_configured() -> None:
    assert page.write_origin(Config(write_port=18080), "localhost:7000") == \
        "http://localhost:18080"
    configured = Config(page_write_url="https://write.example:8443")
    assert page.write_origin(configured, "localhost:7000") == "https://write.example:8443"


def test_page_write_url_must_be_an_origin() -> None:
    with pytest.raises(ValueError, match="PAGE_WRITE_URL"):
        Config(page_write_url="http://write.example/api")


def test_page_names_profile_write_origin_and_hashed_static_files() -> None:
    status, headers, body = page.page_response(Config(profile="secure"), "localhost:7000")
    html = body.decode()
    assert status == 200
    assert 'data-profile="secure"' in html
    assert 'data-write-url="http://localhost:8080"' in html
    scripts = re.findall(r'src="(/static/page\.js\?v=[0-9a-f]{12})"', html)
    assert len(scripts) == 1
    h = dict(headers)
    assert h["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'self';" in h["Content-Security-Policy"]
    assert "connect-src 'self' http://localhost:8080;" in h["Content-Security-Policy"]
    assert "'unsafe-inline'" not in h["Content-Security-Policy"]


def test_template_values_are_html_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(page, "write_origin", lambda config, host: 'http://x"><b>&')
    html = page.render_page(Config(), "localhost")
    assert 'data-write-url="http://x&quot;&gt;&lt;b&gt;&amp;"' in html
    assert "<b>" not in html


def test_static_files_and_unknown_names() -> None:
    status, headers, body = page.static_response("page.js")
    assert status == 200 and dict(headers)["Content-Type"].startswith("text/javascript")
    assert b"textContent" in body and b"innerHTML" not in body
    assert page.static_response("page.css")[0] == 200
    for name in ("nope.js", "../page.py", "page.py", ""):
        status, headers, body = page.static_response(name)
        assert status == 404 and b'"NOT_FOUND"' in body


class Untouchable:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError("serving the page must not touch a store")


def test_registered_on_the_read_app() -> None:
    app = create_app(Config(write_port=18080), redis=Untouchable(), db_pool=Untouchable(),
                     waiter=CartWaiters(1))
    with ReadClient(app) as client:
        resp = client.get("/", headers={"Host": "127.0.0.1:7000"})
        assert resp.status_code == 200
        assert b'data-write-url="http://127.0.0.1:18080"' in resp.content
        js = client.get("/static/page.js?v=anything")
        assert js.status_code == 200 and js.headers["cache-control"] == "public, max-age=86400"
        missing = client.get("/static/other.js")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


def test_registered_on_a_bare_flask_app_with_explicit_config() -> None:
    app = Flask("t", static_folder=None)
    page.register(app, Config())
    assert app.test_client().get("/").status_code == 200
    with pytest.raises(ValueError, match="pass config"):
        page.register(Flask("u", static_folder=None))


def test_registered_on_a_bare_starlette_app() -> None:
    app = Starlette()
    page.register(app, Config(write_port=18080))
    client = TestClient(app)
    resp = client.get("/", headers={"Host": "localhost:7000"})
    assert resp.status_code == 200
    assert 'data-write-url="http://localhost:18080"' in resp.text
    assert "connect-src 'self' http://localhost:18080;" in resp.headers["content-security-policy"]
    assert client.get("/static/page.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/x.css").status_code == 404
