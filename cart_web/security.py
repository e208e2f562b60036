"""The secure profile's guard around an API: Host, CORS, bearer token, limits, headers.

Small framework-neutral functions (`host_allowed`, `preflight_headers`, `read_path_rule`, …)
and one WSGI wrapper, `guard`, that applies them before the app sees the request, so the token
is checked before any body is read. Used only in the secure profile; in dev the read API is not
wrapped at all and the write API only answers CORS for loopback pages (`dev_cors`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from cart_web.auth import (
    PRINCIPAL_ENVIRON,
    Principal,
    TokenVerifier,
    bearer_token,
    check_owner,
    forbidden,
    verifier_from_settings,
)
from cart_web.errors import ApiError, api_error_response
from cart_web.ratelimit import ConcurrencyCap, FixedWindow, redis_factory
from cart_web.server import WsgiApp
from cart_web.settings import AuthSettings, WriteSecurity

log = logging.getLogger("cart_web.security")

API_PREFIX = "/api/v1/"
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})
# Headers a browser page may send cross-origin (when its origin is listed).
CORS_REQUEST_HEADERS = "Authorization, Content-Type, Idempotency-Key, If-Match"
CORS_MAX_AGE_S = "600"
ALWAYS = [("X-Content-Type-Options", "nosniff")]
API_HEADERS = [("Cache-Control", "no-store")]
HOSTS_SEEN_MAX = 64  # allowed Host header values a guard remembers

# Path rule: raise ApiError (403) when the principal may not make this request.
PathRule = Callable[[str, Principal], None]


def host_allowed(host: str | None, allowed: frozenset[str]) -> bool:
    """Whether a Host header names one of `allowed` (port ignored; IPv6 in brackets)."""
    if not host:
        return False
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:host.find("]")] if "]" in host else ""
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in allowed


def preflight_headers(origin: str, allowed: frozenset[str],
                      methods: str) -> list[tuple[str, str]] | None:
    """The answer headers of a CORS preflight from `origin`, or None to refuse it."""
    if origin not in allowed:
        return None
    return [("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Methods", methods),
            ("Access-Control-Allow-Headers", CORS_REQUEST_HEADERS),
            ("Access-Control-Max-Age", CORS_MAX_AGE_S),
            ("Vary", "Origin")]


# The dev profile's page origins: a page served from this machine (the read API's cart page on
# any port). Only loopback: a site on the internet still cannot send JSON commands (415 without
# the preflight this refuses).
_LOOPBACK_ORIGIN = re.compile(r"^http://(?:localhost|127\.0\.0\.1|\[::1\])(?::[0-9]{1,5})?$")


def dev_origin_allowed(origin: str, listed: frozenset[str]) -> bool:
    """Whether the dev profile lets a browser page from `origin` call: listed or loopback."""
    return origin in listed or _LOOPBACK_ORIGIN.fullmatch(origin) is not None


def dev_cors(app: WsgiApp, *, listed: frozenset[str], methods: str) -> WsgiApp:
    """The dev profile's only edge: CORS for loopback and listed origins (the cart page on the
    read API's port calls the write API), nothing else checked."""

    def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        origin = environ.get("HTTP_ORIGIN")
        if not origin:
            return app(environ, start_response)
        allowed = dev_origin_allowed(origin, listed)
        if environ.get("REQUEST_METHOD") == "OPTIONS" and environ.get(
                "HTTP_ACCESS_CONTROL_REQUEST_METHOD"):
            if not allowed:
                return api_error_response(ApiError(
                    403, "ORIGIN_NOT_ALLOWED",
                    f"cross-origin requests from {origin} are not allowed"))(
                    environ, start_response)
            start_response("204 No Content", [
                *(preflight_headers(origin, frozenset({origin}), methods) or []), *ALWAYS])
            return [b""]
        if not allowed:
            return app(environ, start_response)

        def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers += [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
            return start_response(status, headers, exc_info)

        return app(environ, respond)

    return wsgi


def any_principal(path: str, principal: Principal) -> None:
    """Every authenticated principal may make the request (checks come later, if any)."""


def read_path_rule(path: str, principal: Principal) -> None:
    """The read API's rules: `/carts` needs the admin scope; `/products` is any principal's;
    a customer's cart and orders are that customer's (or an admin's)."""
    first = path[len(API_PREFIX):].partition("/")[0]
    if first == "carts":
        if not principal.admin:
            raise forbidden("cart queries need the admin scope")
        return
    if first == "products":
        return
    check_owner(principal, first, admin_allowed=True)


def is_long_poll_query(method: str | None, query_string: str) -> bool:
    """A read-your-write wait: a GET with `minOffset`."""
    return (method == "GET" and "minOffset" in query_string
            and "minOffset" in parse_qs(query_string))


def is_long_poll(environ: dict[str, Any]) -> bool:
    """A read-your-write wait (WSGI environ): a GET with `minOffset`."""
    return is_long_poll_query(environ.get("REQUEST_METHOD"), environ.get("QUERY_STRING") or "")


@dataclass
class Limits:
    """Which limits apply to which requests of one API."""

    commands: FixedWindow | None = None  # every POST under /api/v1/
    waits: FixedWindow | None = None  # every long-poll read started
    wait_cap: ConcurrencyCap | None = None  # long-poll reads open at once
    is_wait: Callable[[dict[str, Any]], bool] = field(default=is_long_poll)


def too_many(message: str, retry_after_s: int) -> ApiError:
    """429 with Retry-After."""
    return ApiError(429, "TOO_MANY_REQUESTS", message,
                    headers={"Retry-After": str(retry_after_s)})


@dataclass(frozen=True)
class Front:
    """What the edge decided before authentication: refuse, answer a preflight, or go on
    with `extra` headers on the answer."""

    error: ApiError | None = None
    preflight: list[tuple[str, str]] | None = None
    extra: list[tuple[str, str]] = field(default_factory=list)


def front_door(host: str | None, origin: str | None, method: str | None,
               preflight_method: str | None, *, allowed_hosts: frozenset[str],
               cors_origins: frozenset[str], methods: str) -> Front:
    """Host (400) and CORS (preflight answered or 403; the allow headers of a listed origin)."""
    if not host_allowed(host, allowed_hosts):
        return Front(ApiError(400, "HOST_NOT_ALLOWED", "this Host is not served here"))
    if origin and method == "OPTIONS" and preflight_method:
        allow = preflight_headers(origin, cors_origins, methods)
        if allow is None:
            return Front(ApiError(403, "ORIGIN_NOT_ALLOWED",
                                  f"cross-origin requests from {origin} are not allowed"))
        return Front(preflight=[*allow, *ALWAYS])
    extra = list(ALWAYS)
    if origin and origin in cors_origins:
        extra += [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")]
    return Front(extra=extra)


def needs_token(path: str) -> bool:
    """Whether a path is under the guarded API (health, readiness and OpenAPI are open)."""
    return path not in OPEN_PATHS and path.startswith(API_PREFIX)


def authenticate(verifier: TokenVerifier, path_rule: PathRule, path: str,
                 authorization: str | None) -> Principal:
    """The bearer token's principal if it may make this request, else 401/403 (ApiError)."""
    principal = verifier.verify(bearer_token(authorization))
    path_rule(path, principal)
    return principal


def adding_headers(start_response: Any, extra: tuple[tuple[str, str], ...]) -> Any:
    """A start_response that appends `extra` to every answer's headers."""

    def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        headers.extend(extra)
        return start_response(status, headers, exc_info)

    return respond


def guard(app: WsgiApp, *, verifier: TokenVerifier, allowed_hosts: frozenset[str],
          cors_origins: frozenset[str], methods: str, path_rule: PathRule = any_principal,
          limits: Limits | None = None) -> WsgiApp:
    """Wrap a WSGI app with the secure profile's checks, in this order: Host (400), CORS
    preflight (403 unless listed), bearer token on /api/v1/* (401), path rule (403), limits
    (429); then the app, its answer carrying nosniff, no-store and the CORS headers.

    Every request passes here, so the usual one (an allowed Host, no Origin, a cached token,
    a plain read) costs only a few lookups: still ~12% more instructions than a dev
    cached-cart read (callgrind; docs/security.md, "Cost").
    """
    limits = limits or Limits()
    commands, waits, wait_cap, is_wait = (limits.commands, limits.waits, limits.wait_cap,
                                          limits.is_wait)
    always, api_always = tuple(ALWAYS), (*ALWAYS, *API_HEADERS)
    # Host header values found allowed (a client sends one for all its requests), so the usual
    # request skips parsing it; bounded, as the values come from clients.
    hosts_seen: set[str] = set()

    def fail(err: ApiError, environ: dict[str, Any], start_response: Any,
             extra: tuple[tuple[str, str], ...]) -> Iterable[bytes]:
        return api_error_response(err)(environ, adding_headers(start_response, extra))

    def wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST")
        if host not in hosts_seen:
            if not host_allowed(host, allowed_hosts):
                return fail(ApiError(400, "HOST_NOT_ALLOWED", "this Host is not served here"),
                            environ, start_response, always)
            if len(hosts_seen) < HOSTS_SEEN_MAX:
                hosts_seen.add(host)  # type: ignore[arg-type] - allowed, so not None
        origin = environ.get("HTTP_ORIGIN")
        method = environ.get("REQUEST_METHOD")
        cors: tuple[tuple[str, str], ...] = ()
        if origin:
            if method == "OPTIONS" and environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD"):
                allow = preflight_headers(origin, cors_origins, methods)
                if allow is None:
                    return fail(ApiError(403, "ORIGIN_NOT_ALLOWED",
                                         f"cross-origin requests from {origin} are not allowed"),
                                environ, start_response, always)
                start_response("204 No Content", [*allow, *ALWAYS])
                return [b""]
            if origin in cors_origins:
                cors = (("Access-Control-Allow-Origin", origin), ("Vary", "Origin"))
        path = environ.get("PATH_INFO") or ""
        if path in OPEN_PATHS or not path.startswith(API_PREFIX):
            return app(environ, adding_headers(start_response, always + cors))
        extra = api_always + cors if cors else api_always
        waiting: str | None = None
        try:
            principal = authenticate(verifier, path_rule, path, environ.get("HTTP_AUTHORIZATION"))
            environ[PRINCIPAL_ENVIRON] = principal
            if commands is not None and method == "POST":
                retry = commands.hit(principal.subject)
                if retry is not None:
                    raise too_many("too many commands; slow down", retry)
            if waits is not None and is_wait(environ):
                retry = waits.hit(principal.subject)
                if retry is not None:
                    raise too_many("too many read-your-write waits; slow down", retry)
                if wait_cap is not None:
                    held = wait_cap.acquire(principal.subject)
                    if held is False:
                        raise too_many("too many read-your-write waits open at once", 1)
                    if held:
                        waiting = principal.subject
        except ApiError as err:
            return fail(err, environ, start_response, extra)
        if waiting is None:
            return app(environ, adding_headers(start_response, extra))
        try:
            # The apps answer with one buffered body (cart_web.server.buffered): when this call
            # returns, the request, and so its wait, has ended.
            return app(environ, adding_headers(start_response, extra))
        finally:
            if wait_cap is not None:
                wait_cap.release(waiting)

    return wsgi


def declare_bearer(doc: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI document with the bearer scheme required on every /api/v1/ operation."""
    components = doc.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "a JWT whose `sub` is the customerId; the admin scope allows "
                       "cross-customer reads"}
    error = {"$ref": "#/components/schemas/Error"} if "Error" in components.get(
        "schemas", {}) else {"type": "object"}
    answers = {
        "401": "Missing, expired or invalid token (`WWW-Authenticate: Bearer`).",
        "403": "The token does not allow this request (another customer, or no admin scope).",
        "429": "Rate limit reached (`Retry-After`).",
    }
    for path, item in doc.get("paths", {}).items():
        if not path.startswith(API_PREFIX):
            continue
        for operation in item.values():
            operation["security"] = [{"bearerAuth": []}]
            responses = operation.setdefault("responses", {})
            for status, text in answers.items():
                responses.setdefault(status, {"description": text, "content": {
                    "application/json": {"schema": error}}})
    return doc


# ------------------------------------------------------------------ wiring, per API


def with_security_scheme(settings: AuthSettings, doc: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document as served in this profile."""
    return declare_bearer(doc) if settings.secure else doc


def protect_write(app: WsgiApp, settings: WriteSecurity, *, redis_url: str, key_prefix: str,
                  verifier: TokenVerifier | None = None) -> WsgiApp:
    """The write API as served in this profile: in dev only CORS for loopback pages (the cart
    page) and CORS_ORIGINS, guarded in secure."""
    if not settings.secure:
        return dev_cors(app, listed=settings.cors_origin_set, methods="POST")
    client = redis_factory(redis_url)
    return guard(
        app, verifier=verifier or verifier_from_settings(settings),
        allowed_hosts=settings.allowed_host_set, cors_origins=settings.cors_origin_set,
        methods="POST", path_rule=any_principal,
        limits=Limits(commands=FixedWindow(client, "commands", settings.rate_limit_commands,
                                           settings.rate_limit_window_s,
                                           key_prefix=key_prefix)))
