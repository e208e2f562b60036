"""The shared HTTP edge for an ASGI (Starlette) API: the JSON error shape and the secure
profile's guard, the same rules as the WSGI ones (cart_web.errors, cart_web.security) through a
thin ASGI adapter; the limits go through redis.asyncio (cart_web.ratelimit's Async* classes).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from cart_web.auth import PRINCIPAL_ENVIRON, Principal, TokenVerifier, verifier_from_settings
from cart_web.errors import HTTP_CODES, JSON, ApiError, error_object
from cart_web.ratelimit import AsyncConcurrencyCap, AsyncFixedWindow, async_redis_factory
from cart_web.security import (
    API_HEADERS,
    PathRule,
    authenticate,
    front_door,
    is_long_poll_query,
    needs_token,
    read_path_rule,
    too_many,
)
from cart_web.settings import ReadSecurity

# Resolves a request that carries no bearer token to a principal another way (the read API's
# event-stream tickets); None: no such credential, ask for the token.
AltAuth = Callable[[Scope, str], Awaitable[Principal | None]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response; bytes are sent as they are (documents already serialised)."""
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(data, status, headers, media_type=JSON)


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """The JSON error response every failure uses."""
    return json_response({"error": error_object(code, message, field)}, status, headers)


def api_error_response(err: ApiError) -> Response:
    """The response an ApiError stands for."""
    return json_response(err.body(), err.status, err.headers)


def exception_handlers(log: logging.Logger) -> dict[Any, Callable[..., Any]]:
    """Starlette handlers answering ApiError, HTTP errors (404, 405 with Allow) and any bug
    in the JSON error shape."""

    async def on_api_error(_request: Request, err: Exception) -> Response:
        assert isinstance(err, ApiError)
        return api_error_response(err)

    async def on_http_error(_request: Request, err: Exception) -> Response:
        assert isinstance(err, HTTPException)
        status = err.status_code
        code = HTTP_CODES.get(status) or (
            str(err.detail).upper().replace(" ", "_") if status < 500 else "INTERNAL")
        return error_response(status, code, str(err.detail or code), None, err.headers)

    async def on_bug(_request: Request, err: Exception) -> Response:
        log.error("unhandled error", exc_info=err)
        return error_response(500, "INTERNAL", "internal error")

    return {ApiError: on_api_error, HTTPException: on_http_error, Exception: on_bug}


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return value.decode("latin-1")
    return None


@dataclass
class AsyncLimits:
    """The read API's limits in the secure profile (long-poll waits started and open)."""

    waits: AsyncFixedWindow | None = None
    wait_cap: AsyncConcurrencyCap | None = None


def guard(app: ASGIApp, *, verifier: TokenVerifier, allowed_hosts: frozenset[str],
          cors_origins: frozenset[str], methods: str, path_rule: PathRule,
          limits: AsyncLimits | None = None, alt_auth: AltAuth | None = None) -> ASGIApp:
    """cart_web.security.guard for ASGI: Host (400), CORS preflight, bearer token (or
    `alt_auth`) on /api/v1/* (401), path rule (403), wait limits (429); then the app, its
    answer carrying nosniff, no-store and the CORS headers."""
    limits = limits or AsyncLimits()

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        method = scope.get("method")
        front = front_door(_header(scope, b"host"), _header(scope, b"origin"), method,
                           _header(scope, b"access-control-request-method"),
                           allowed_hosts=allowed_hosts, cors_origins=cors_origins,
                           methods=methods)
        if front.preflight is not None:
            await Response(b"", 204, dict(front.preflight))(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in front.extra]

        async def respond(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        if front.error is not None:
            await api_error_response(front.error)(scope, receive, respond)
            return
        path = scope.get("path", "")
        if not needs_token(path):
            await app(scope, receive, respond)
            return
        extra += [(k.lower().encode(), v.encode()) for k, v in API_HEADERS]
        waiting: str | None = None
        try:
            authorization = _header(scope, b"authorization")
            principal = None
            if authorization is None and alt_auth is not None:
                principal = await alt_auth(scope, path)
                if principal is not None:
                    path_rule(path, principal)
            if principal is None:
                principal = authenticate(verifier, path_rule, path, authorization)
            scope.setdefault("state", {})[PRINCIPAL_ENVIRON] = principal
            query = scope.get("query_string", b"").decode("latin-1")
            if limits.waits is not None and is_long_poll_query(method, query):
                retry = await limits.waits.hit(principal.subject)
                if retry is not None:
                    raise too_many("too many read-your-write waits; slow down", retry)
                if limits.wait_cap is not None:
                    held = await limits.wait_cap.acquire(principal.subject)
                    if held is False:
                        raise too_many("too many read-your-write waits open at once", 1)
                    if held:
                        waiting = principal.subject
        except ApiError as err:
            await api_error_response(err)(scope, receive, respond)
            return
        try:
            await app(scope, receive, respond)
        finally:
            if waiting is not None and limits.wait_cap is not None:
                await limits.wait_cap.release(waiting)

    return asgi


def principal_of(request: Request) -> Principal | None:
    """The principal the guard verified (None in the dev profile)."""
    return request.scope.get("state", {}).get(PRINCIPAL_ENVIRON)


def protect_read(app: ASGIApp, settings: ReadSecurity, *, redis_url: str, key_prefix: str,
                 max_wait_s: float, verifier: TokenVerifier | None = None,
                 alt_auth: AltAuth | None = None) -> ASGIApp:
    """The read API as served in this profile: unchanged in dev, guarded in secure."""
    if not settings.secure:
        return app
    client = async_redis_factory(redis_url)
    return guard(
        app, verifier=verifier or verifier_from_settings(settings),
        allowed_hosts=settings.allowed_host_set, cors_origins=settings.cors_origin_set,
        methods="GET, POST", path_rule=read_path_rule, alt_auth=alt_auth,
        limits=AsyncLimits(
            waits=AsyncFixedWindow(client, "waits", settings.rate_limit_waits,
                                   settings.rate_limit_window_s, key_prefix=key_prefix),
            # The counter outlives the longest wait, so only a crashed instance's waits expire.
            wait_cap=AsyncConcurrencyCap(client, settings.max_waits_per_principal,
                                         int(max_wait_s) + 30, key_prefix=key_prefix)))
