"""The HTTP plumbing both APIs share: env parsing, the error shape, granian logging (no I/O)."""

from __future__ import annotations

import pytest
from flask import Flask

from cart_web.env import env_bool, env_float, env_int
from cart_web.errors import ApiError, register_error_handlers
from cart_web.server import logging_config


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("ON", True), (" no ", False),
                                            ("", True), (None, True)])
def test_booleans(raw: str | None, value: bool) -> None:
    env = {} if raw is None else {"X": raw}
    assert env_bool(env, "X", True) is value


@pytest.mark.parametrize("env", [{"X": "maybe"}])
def test_a_bad_boolean_names_the_variable(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="X must be a boolean"):
        env_bool(env, "X", False)


def test_numbers_have_a_floor_and_a_default() -> None:
    assert env_int({}, "N", 7) == 7 and env_int({"N": " "}, "N", 7) == 7
    assert env_float({"F": "0.5"}, "F", 1.0) == 0.5
    with pytest.raises(ValueError, match="N must be >= 1"):
        env_int({"N": "0"}, "N", 7, minimum=1)
    with pytest.raises(ValueError, match="F must be a number"):
        env_float({"F": "fast"}, "F", 1.0)


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
