"""The secure profile's pieces without I/O: tokens, path rules, Host/CORS, limits, the guard."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from werkzeug.test import Client

from cart_web.auth import (
    PRINCIPAL_ENVIRON,
    TokenVerifier,
    bearer_token,
    check_command,
    issue_token,
    verifier_from_settings,
)
from cart_web.errors import ApiError
from cart_web.ratelimit import ConcurrencyCap, FixedWindow
from cart_web.security import (
    HOSTS_SEEN_MAX,
    Limits,
    declare_bearer,
    guard,
    host_allowed,
    preflight_headers,
    read_path_rule,
)
from cart_web.settings import AuthSettings

SECRET = "unit-test-secret-unit-test-secret"
SETTINGS = AuthSettings(profile="secure", jwt_secret=SECRET)
# PyJWT checks exp against the real clock: tokens made at import must outlive a long run
# (CI collects every test first and runs the unit tests last), so they last an hour.
NOW = float(int(time.time()))


def token(sub: str = "123", *, admin: bool = False, ttl: int = 3600, now: float = NOW) -> str:
    return issue_token(SETTINGS, sub, admin=admin, ttl_s=ttl, now=now)


def verifier(clock: float = NOW) -> TokenVerifier:
    return TokenVerifier(lambda _t: SECRET, ("HS256",), issuer="cartstream",
                         audience="cartstream", admin_scope="cartstream:admin",
                         clock=lambda: clock)


def status_of(fn: Any) -> int:
    with pytest.raises(ApiError) as info:
        fn()
    return info.value.status


def test_a_local_token_names_its_customer_and_scope() -> None:
    p = verifier().verify(token("c-1"))
    assert (p.subject, p.admin, p.expires_at) == ("c-1", False, NOW + 3600)
    assert verifier().verify(token("ops", admin=True)).admin


@pytest.mark.parametrize("claims", [{"scope": "read cartstream:admin"},
                                    {"scp": ["cartstream:admin"]}])
def test_the_admin_scope_comes_from_scope_or_scp(claims: dict[str, Any]) -> None:
    t = jwt.encode({"sub": "a", "iss": "cartstream", "aud": "cartstream", "exp": NOW + 3600,
                    **claims}, SECRET, algorithm="HS256")
    assert verifier().verify(t).admin


def _claims(**over: Any) -> dict[str, Any]:
    return {"sub": "123", "iss": "cartstream", "aud": "cartstream", "exp": NOW + 3600, **over}


BAD_TOKENS = {
    "expired": jwt.encode(_claims(exp=NOW - 60), SECRET, algorithm="HS256"),
    "forged": jwt.encode(_claims(), "another-secret-another-secret-xx", algorithm="HS256"),
    "alg none": jwt.encode(_claims(), None, algorithm="none"),
    "wrong issuer": jwt.encode(_claims(iss="evil"), SECRET, algorithm="HS256"),
    "wrong audience": jwt.encode(_claims(aud="other"), SECRET, algorithm="HS256"),
    "no exp": jwt.encode({k: v for k, v in _claims().items() if k != "exp"}, SECRET,
                         algorithm="HS256"),
    "empty sub": jwt.encode(_claims(sub=""), SECRET, algorithm="HS256"),
    "garbage": "not.a.token",
}


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
def test_bad_tokens_are_401_with_a_bearer_challenge(name: str) -> None:
    with pytest.raises(ApiError) as info:
        verifier().verify(BAD_TOKENS[name])
    assert info.value.status == 401
    assert info.value.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer", "Bearer  "])
def test_a_missing_or_foreign_authorization_header_is_401(header: str | None) -> None:
    assert status_of(lambda: bearer_token(header)) == 401


def counting_verifier(clock: list[float], calls: list[str], *, cache_size: int = 100,
                      issuer: str = "cartstream", audience: str = "cartstream",
                      leeway_s: int = 0) -> TokenVerifier:
    """A verifier whose clock the test moves and which records every real verification."""
    return TokenVerifier(lambda t: calls.append(t) or SECRET, ("HS256",), issuer=issuer,
                         audience=audience, admin_scope="x", leeway_s=leeway_s,
                         clock=lambda: clock[0], cache_size=cache_size)


def test_verified_tokens_are_cached_until_they_expire() -> None:
    calls: list[str] = []
    clock = [NOW]
    v = counting_verifier(clock, calls)
    t = token(ttl=3600)
    assert v.verify(t) is v.verify(t)
    assert len(calls) == 1
    clock[0] = NOW + 3599
    assert v.verify(t).subject == "123" and len(calls) == 1


def test_a_cached_token_past_its_exp_is_refused_and_dropped() -> None:
    calls: list[str] = []
    now = float(int(time.time()))  # PyJWT checks the first verify on the real clock
    clock = [now]
    v = counting_verifier(clock, calls)
    t = token(ttl=60, now=now)
    v.verify(t)
    assert t in v.cache
    clock[0] = now + 60  # exp itself: PyJWT refuses a token at its exp too
    assert status_of(lambda: v.verify(t)) == 401
    assert t not in v.cache
    # Not cached any more, and still refused (by the verifier's clock, not only the cache's).
    assert status_of(lambda: v.verify(t)) == 401
    assert t not in v.cache


def test_the_leeway_applies_to_cached_tokens_as_to_fresh_ones() -> None:
    calls: list[str] = []
    now = float(int(time.time()))
    clock = [now]
    v = counting_verifier(clock, calls, leeway_s=10)
    t = token(ttl=60, now=now)
    v.verify(t)
    clock[0] = now + 65
    assert v.verify(t).subject == "123"
    clock[0] = now + 70
    assert status_of(lambda: v.verify(t)) == 401


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
def test_a_refused_token_is_never_cached(name: str) -> None:
    calls: list[str] = []
    v = counting_verifier([NOW], calls)
    for _ in range(2):  # refused each time: checked again, never answered from the cache
        assert status_of(lambda: v.verify(BAD_TOKENS[name])) == 401
    assert len(v.cache) == 0


def test_a_forgery_of_a_cached_token_is_refused() -> None:
    v = counting_verifier([NOW], [])
    good = token("123")
    v.verify(good)
    # Same header and claims as the cached token, another key's signature.
    header_and_claims = good.rsplit(".", 1)[0]
    forged = jwt.encode(jwt.decode(good, options={"verify_signature": False}),
                        "another-secret-another-secret-xx", algorithm="HS256")
    assert forged.rsplit(".", 1)[0] == header_and_claims
    assert status_of(lambda: v.verify(forged)) == 401
    assert status_of(lambda: v.verify(header_and_claims + ".")) == 401
    assert len(v.cache) == 1


def test_the_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    calls: list[str] = []
    v = counting_verifier([NOW], calls, cache_size=3)
    a, b, c, d = (token(f"c-{i}") for i in range(4))
    for t in (a, b, c):
        v.verify(t)
    v.verify(a)  # a is now the most recently used: b goes first
    v.verify(d)
    assert len(v.cache) == 3
    assert a in v.cache and b not in v.cache and c in v.cache and d in v.cache
    calls.clear()
    v.verify(b)  # checked again (and c evicted)
    assert calls == [b] and c not in v.cache and len(v.cache) == 3


def test_each_verifier_caches_under_its_own_issuer_and_audience_rules() -> None:
    clock = [NOW]
    mine = counting_verifier(clock, [])
    other_issuer = counting_verifier(clock, [], issuer="someone-else")
    other_audience = counting_verifier(clock, [], audience="another-api")
    t = token()
    assert mine.verify(t).subject == "123"
    assert status_of(lambda: other_issuer.verify(t)) == 401
    assert status_of(lambda: other_audience.verify(t)) == 401
    assert len(other_issuer.cache) == len(other_audience.cache) == 0


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
def test_the_local_verifier_refuses_bad_tokens_without_the_early_alg_check(name: str) -> None:
    v = verifier_from_settings(SETTINGS)
    assert status_of(lambda: v.verify(BAD_TOKENS[name])) == 401
    assert len(v.cache) == 0
    assert v.verify(token()).subject == "123"


def test_a_jwks_verifier_refuses_hs256_tokens() -> None:
    v = verifier_from_settings(AuthSettings(profile="secure",
                                            jwt_jwks_url="http://127.0.0.1:9/jwks.json"))
    assert status_of(lambda: v.verify(token())) == 401
    with pytest.raises(ValueError):
        issue_token(AuthSettings(jwt_jwks_url="http://127.0.0.1:9/jwks.json"), "1")


def test_commands_act_only_for_the_tokens_customer() -> None:
    me = verifier().verify(token("123"))
    admin = verifier().verify(token("ops", admin=True))
    check_command({PRINCIPAL_ENVIRON: me}, "123")
    check_command({}, "anyone")  # dev profile: no principal, no check
    assert status_of(lambda: check_command({PRINCIPAL_ENVIRON: me}, "456")) == 403
    assert status_of(lambda: check_command({PRINCIPAL_ENVIRON: admin}, "456")) == 403


def test_read_paths_belong_to_their_customer_and_queries_to_admins() -> None:
    me = verifier().verify(token("123"))
    admin = verifier().verify(token("ops", admin=True))
    for path in ("/api/v1/123", "/api/v1/123/orders", "/api/v1/products", "/api/v1/products/1"):
        read_path_rule(path, me)
    for path in ("/api/v1/456", "/api/v1/456/orders", "/api/v1/carts"):
        assert status_of(lambda p=path: read_path_rule(p, me)) == 403
        read_path_rule(path, admin)


@pytest.mark.parametrize(("host", "ok"), [
    ("localhost:7000", True), ("127.0.0.1", True), ("[::1]:8080", True), ("LOCALHOST", True),
    ("evil.example:7000", False), ("", False), (None, False), ("localhost.evil.example", False),
    ("[::2]:80", False),
])
def test_host_allow_list(host: str | None, ok: bool) -> None:
    assert host_allowed(host, SETTINGS.allowed_host_set) is ok


def test_preflight_only_for_listed_origins() -> None:
    allowed = frozenset({"https://shop.example"})
    headers = dict(preflight_headers("https://shop.example", allowed, "GET") or [])
    assert headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    assert preflight_headers("https://evil.example", allowed, "GET") is None
    assert preflight_headers("https://evil.example", frozenset(), "GET") is None


class FakeRedis:
    """INCR/EXPIRE/DECR in memory, with redis-py's pipeline shape."""

    def __init__(self) -> None:
        self.values: dict[str, int] = {}
        self.ttl: dict[str, int] = {}
        self._ops: list[Any] = []

    def pipeline(self, transaction: bool = True) -> FakeRedis:
        self._ops = []
        return self

    def incr(self, key: str) -> FakeRedis:
        self._ops.append(("incr", key))
        return self

    def expire(self, key: str, seconds: int) -> FakeRedis:
        self._ops.append(("expire", key, seconds))
        return self

    def execute(self) -> list[Any]:
        out = []
        for op in self._ops:
            if op[0] == "incr":
                self.values[op[1]] = self.values.get(op[1], 0) + 1
                out.append(self.values[op[1]])
            else:
                self.ttl[op[1]] = op[2]
                out.append(True)
        return out

    def decr(self, key: str) -> int:
        self.values[key] = self.values.get(key, 0) - 1
        return self.values[key]


def test_fixed_window_counts_per_principal_and_says_when_to_retry() -> None:
    r = FakeRedis()
    clock = [600.0 + 15]
    limit = FixedWindow(lambda: r, "commands", 2, 60, key_prefix="t:", clock=lambda: clock[0])
    assert limit.hit("a") is None and limit.hit("a") is None
    assert limit.hit("a") == 45  # the window ends at 660
    assert limit.hit("b") is None  # another principal has its own count
    assert r.ttl["t:ratelimit:commands:a:10"] == 61
    clock[0] = 660.0  # next window
    assert limit.hit("a") is None


def test_the_wait_cap_counts_open_waits() -> None:
    r = FakeRedis()
    cap = ConcurrencyCap(lambda: r, 1, 60)
    assert cap.acquire("a") is True
    assert cap.acquire("a") is False
    assert cap.acquire("b") is True
    cap.release("a")
    assert cap.acquire("a") is True


def _app(seen: list[dict[str, Any]]) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b"{}"]
    return app


def _guarded(seen: list[dict[str, Any]], limits: Limits | None = None) -> Client:
    return Client(guard(_app(seen), verifier=verifier(clock=NOW), methods="GET, POST",
                        allowed_hosts=SETTINGS.allowed_host_set,
                        cors_origins=frozenset({"https://shop.example"}),
                        path_rule=read_path_rule, limits=limits))


def _auth(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def test_the_guard_checks_the_token_before_the_app_sees_the_request() -> None:
    seen: list[dict[str, Any]] = []
    c = _guarded(seen)
    resp = c.post("/api/v1/add", data="x" * 10, content_type="application/json")
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert resp.json["error"]["code"] == "UNAUTHORIZED"
    resp = c.get("/api/v1/123", headers=_auth(BAD_TOKENS["alg none"]))
    assert resp.status_code == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert c.get("/api/v1/456", headers=_auth(token("123"))).status_code == 403
    assert seen == []
    resp = c.get("/api/v1/123", headers=_auth(token("123")))
    assert resp.status_code == 200
    assert seen[0][PRINCIPAL_ENVIRON].subject == "123"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_open_paths_need_no_token() -> None:
    seen: list[dict[str, Any]] = []
    c = _guarded(seen)
    for path in ("/healthz", "/readyz", "/openapi.json"):
        resp = c.get(path)
        assert resp.status_code == 200 and resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "Cache-Control" not in resp.headers


def test_the_guard_refuses_foreign_hosts_and_origins() -> None:
    seen: list[dict[str, Any]] = []
    c = _guarded(seen)
    resp = c.get("/healthz", headers={"Host": "evil.example"})
    assert resp.status_code == 400 and resp.json["error"]["code"] == "HOST_NOT_ALLOWED"
    pre = {"Access-Control-Request-Method": "POST"}
    resp = c.options("/api/v1/add", headers={"Origin": "https://evil.example", **pre})
    assert resp.status_code == 403 and "Access-Control-Allow-Origin" not in resp.headers
    resp = c.options("/api/v1/add", headers={"Origin": "https://shop.example", **pre})
    assert resp.status_code == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    resp = c.get("/api/v1/123", headers={"Origin": "https://shop.example", **_auth(token())})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    resp = c.get("/api/v1/123", headers={"Origin": "https://evil.example", **_auth(token())})
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert len(seen) == 2


def test_the_guard_remembers_allowed_hosts_only_and_boundedly() -> None:
    seen: list[dict[str, Any]] = []
    c = _guarded(seen)
    ok = _auth(token())
    for host in ("localhost:7000", "evil.example", "localhost:7000", "evil.example"):
        resp = c.get("/api/v1/123", headers={"Host": host, **ok})
        assert resp.status_code == (200 if host.startswith("localhost") else 400), host
    # Many allowed spellings (ports) fill the memory; beyond it each is still checked.
    for port in range(HOSTS_SEEN_MAX + 10):
        assert c.get("/healthz", headers={"Host": f"127.0.0.1:{port}"}).status_code == 200
    assert c.get("/healthz", headers={"Host": "evil.example:1"}).status_code == 400
    assert len(seen) == 2 + HOSTS_SEEN_MAX + 10


def test_the_guard_limits_commands_and_waits_per_principal() -> None:
    r = FakeRedis()
    seen: list[dict[str, Any]] = []
    limits = Limits(commands=FixedWindow(lambda: r, "commands", 1, 60),
                    waits=FixedWindow(lambda: r, "waits", 5, 60),
                    wait_cap=ConcurrencyCap(lambda: r, 1, 60))
    c = _guarded(seen, limits)
    assert c.post("/api/v1/123", headers=_auth(token())).status_code == 200
    resp = c.post("/api/v1/123", headers=_auth(token()))
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
    assert c.get("/api/v1/123?minOffset=1", headers=_auth(token())).status_code == 200
    assert r.values["waiting:123"] == 0  # released once the request ended
    r.values["waiting:123"] = 1  # one wait open elsewhere
    resp = c.get("/api/v1/123?minOffset=1", headers=_auth(token()))
    assert resp.status_code == 429 and resp.json["error"]["code"] == "TOO_MANY_REQUESTS"
    assert c.get("/api/v1/123", headers=_auth(token())).status_code == 200  # plain reads pass


def test_the_openapi_document_declares_the_bearer_scheme() -> None:
    doc = declare_bearer({"paths": {"/api/v1/x": {"get": {"responses": {}}},
                                    "/healthz": {"get": {"responses": {}}}},
                          "components": {"schemas": {"Error": {}}}})
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert doc["paths"]["/api/v1/x"]["get"]["security"] == [{"bearerAuth": []}]
    assert "401" in doc["paths"]["/api/v1/x"]["get"]["responses"]
    assert "security" not in doc["paths"]["/healthz"]["get"]


def test_urls_are_logged_without_their_password() -> None:
    from cart_contract.secrets import redact_url

    assert redact_url("redis://read-api:s3cret@127.0.0.1:6379/0") == \
        "redis://read-api:***@127.0.0.1:6379/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
