"""The HTTP plumbing both APIs share: the error shape, granian logging (no I/O)."""

from __future__ import annotations

from flask import Flask

from cart_web.errors import ApiError, register_error_handlers
from cart_web.server import logging_config


def test_every_failure_has_the_json_error_shape() -> None:
    import logging

    app = Flask("t")
    register_error_handlers(app, logging.getLogger("t"))

    @app.get("/api")
    def api() -> str:
        raise ApiError(409, "CONFLICT", "no", "x", headers={"Retry-After": "1"},
                       extra={"version": 3})

    @app.get("/bug")
    def bug() -> str:
        raise RuntimeError("boom")

    c = app.test_client()
    r = c.get("/api")
    assert (r.status_code, r.headers["Retry-After"]) == (409, "1")
    assert r.json == {"error": {"code": "CONFLICT", "message": "no", "field": "x"}, "version": 3}
    assert c.get("/nope").json["error"]["code"] == "NOT_FOUND"
    r = c.post("/api")
    assert (r.status_code, r.json["error"]["code"], r.headers["Allow"]) == (
        405, "METHOD_NOT_ALLOWED", "GET, HEAD, OPTIONS")
    assert (c.get("/bug").status_code, c.get("/bug").json["error"]["code"]) == (500, "INTERNAL")


def test_logging_config_quiets_only_what_it_is_told() -> None:
    cfg = logging_config("WARNING", ["svc"], quiet=["noisy"])["loggers"]
    assert (cfg["svc"]["level"], cfg["noisy"]["level"], cfg["_granian"]["level"]) == (
        "WARNING", "CRITICAL", "WARNING")
