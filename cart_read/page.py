"""The cart page: `GET /` on the read API, one server-rendered page with a little JavaScript.

No build step: `templates/page.html` is filled with `string.Template` (every value HTML-escaped),
`static/page.js` and `static/page.css` are served as they are. The page reads the catalog, the
cart (live, from the SSE stream) and the orders from this API (same origin) and sends commands
to the write API, whose origin it is told here (README "The cart page": in dev the write API's
CORS allows loopback origins; in the secure profile list the page's origin in CORS_ORIGINS).

Framework-neutral: `page_response` and `static_response` return (status, headers, body);
`register(app)` wires them into whichever app the read API is (Flask, Quart or Starlette).
"""

from __future__ import annotations

import hashlib
import html
import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from cart_contract.ids import ID_RE
from cart_contract.limits import QTY_MAX
from cart_read.config import Config
from cart_web.openapi import error as error_response

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATE = HERE / "templates" / "page.html"
STATIC_PREFIX = "/static/"
# The files under /static/ and their types; nothing else is served from there.
STATIC_TYPES = {
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}
# A Host header's name part we are willing to echo into the page and its CSP.
_HOST_NAME = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])$")
_DEFAULT_HOST = "127.0.0.1"
CATALOG_PAGE_SIZE = 10

Answer = tuple[int, list[tuple[str, str]], bytes]


@dataclass(frozen=True)
class StaticFile:
    """One static file, read once: its bytes, type and a short content hash (cache busting)."""

    body: bytes
    content_type: str
    digest: str


def _load_static() -> dict[str, StaticFile]:
    files = {}
    for name, content_type in STATIC_TYPES.items():
        body = (STATIC_DIR / name).read_bytes()
        files[name] = StaticFile(body, content_type, hashlib.sha256(body).hexdigest()[:12])
    return files


_STATIC = _load_static()
_TEMPLATE = Template(TEMPLATE.read_text(encoding="utf-8"))


def host_name(host_header: str | None) -> str:
    """The name part of a Host header (no port), or 127.0.0.1 when absent or odd-looking."""
    host = (host_header or "").strip()
    if host.startswith("["):
        name = host[: host.find("]") + 1] if "]" in host else ""
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name if _HOST_NAME.fullmatch(name) else _DEFAULT_HOST


def write_origin(config: Config, host_header: str | None) -> str:
    """Where the page's commands go: PAGE_WRITE_URL, else the page's host on WRITE_PORT."""
    if config.page_write_url:
        return config.page_write_url
    return f"http://{host_name(host_header)}:{config.write_port}"


def render_page(config: Config, host_header: str | None) -> str:
    """The page's HTML for a request with this Host header."""
    values = {
        "profile": config.profile,
        "write_url": write_origin(config, host_header),
        "page_size": str(CATALOG_PAGE_SIZE),
        "id_pattern": ID_RE.pattern.removeprefix("^").removesuffix("$"),
        "qty_max": str(QTY_MAX),
        "js": f"{STATIC_PREFIX}page.js?v={_STATIC['page.js'].digest}",
        "css": f"{STATIC_PREFIX}page.css?v={_STATIC['page.css'].digest}",
    }
    return _TEMPLATE.substitute({k: html.escape(v, quote=True) for k, v in values.items()})


def _csp(write_url: str) -> str:
    # Only our own script and style; data goes to this API and the write API, nowhere else.
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            f"connect-src 'self' {write_url}; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


def page_response(config: Config, host_header: str | None) -> Answer:
    """The answer to `GET /`."""
    body = render_page(config, host_header).encode()
    headers = [
        ("Content-Type", "text/html; charset=utf-8"),
        ("Content-Security-Policy", _csp(write_origin(config, host_header))),
        ("Cache-Control", "no-cache"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Content-Type-Options", "nosniff"),
    ]
    return 200, headers, body


def static_response(name: str) -> Answer:
    """The answer to `GET /static/<name>`: the file, or a JSON 404."""
    found = _STATIC.get(name)
    if found is None:
        body = (b'{"error":{"code":"NOT_FOUND","message":"no such static file",'
                b'"field":null}}')
        return 404, [("Content-Type", "application/json")], body
    # The page names each file with its hash, so a cached copy is never stale.
    return 200, [("Content-Type", found.content_type),
                 ("Cache-Control", "public, max-age=86400"),
                 ("X-Content-Type-Options", "nosniff")], found.body


def openapi_paths() -> dict[str, Any]:
    """The page's two routes for the read API's OpenAPI document."""
    return {
        "/": {"get": {
            "summary": "The cart page: a small web page over this API and the write API.",
            "operationId": "cartPage",
            "responses": {"200": {"description": "The page.",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}},
        }},
        f"{STATIC_PREFIX}{{name}}": {"get": {
            "summary": "The cart page's script and style.",
            "operationId": "cartPageStatic",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": sorted(STATIC_TYPES)}}],
            "responses": {
                "200": {"description": "The file.", "content": {
                    t.split(";")[0]: {"schema": {"type": "string"}}
                    for t in STATIC_TYPES.values()}},
                "404": error_response("No such file."),
            },
        }},
    }


def register(app: Any, config: Config | None = None) -> None:
    """Serve `GET /` and `GET /static/<name>` from the read app (Flask, Quart or Starlette)."""
    config = config or _config_of(app)
    if hasattr(app, "add_url_rule"):  # Flask and Quart
        _register_flask_like(app, config)
    else:
        _register_starlette(app, config)


def _config_of(app: Any) -> Config:
    ext = getattr(app, "extensions", None) or {}
    ctx = ext.get("cart_read") if isinstance(ext, dict) else None
    if ctx is None:
        ctx = getattr(getattr(app, "state", None), "cart_read", None)
    if ctx is None:
        raise ValueError("register(app, config): the app holds no read context; pass config")
    return ctx.config


def _register_flask_like(app: Any, config: Config) -> None:
    def answer(result: Answer) -> Any:
        status, headers, body = result
        return app.response_class(body, status=status, headers=headers)

    # Flask's or Quart's request proxy, whichever package the app comes from.
    request = importlib.import_module(type(app).__module__.split(".")[0]).request

    def index() -> Any:
        return answer(page_response(config, request.headers.get("Host")))

    def static(name: str) -> Any:
        return answer(static_response(name))

    app.add_url_rule("/", endpoint="cart_page", view_func=index, methods=["GET"])
    app.add_url_rule(f"{STATIC_PREFIX}<name>", endpoint="cart_page_static",
                     view_func=static, methods=["GET"])


def _register_starlette(app: Any, config: Config) -> None:
    from starlette.responses import Response  # noqa: PLC0415 - only when Starlette serves

    def answer(result: Answer) -> Response:
        status, headers, body = result
        return Response(body, status_code=status, headers=dict(headers))

    async def index(request: Any) -> Response:
        return answer(page_response(config, request.headers.get("host")))

    async def static(request: Any) -> Response:
        return answer(static_response(request.path_params["name"]))

    app.add_route("/", index, methods=["GET"])
    app.add_route(f"{STATIC_PREFIX}{{name}}", static, methods=["GET"])
