"""Bearer tokens (JWT, PyJWT): verify, cache, authorize; framework-neutral, no Flask here.

A token's `sub` is the customerId it acts for; the admin scope (`scope` or `scp` claim) allows
the cross-customer queries. Two ways to verify, chosen by settings: a local HS256 key, or an
identity provider's JWKS (keys cached and refreshed by PyJWKClient). Either way `exp`, `iss`
and `aud` are required and checked, and only the expected algorithms are accepted, so
`alg: none` and an HS256 token signed with a JWKS public key are refused.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from cart_web.errors import ApiError
from cart_web.settings import AuthSettings

# Where the security middleware leaves the verified principal for the handlers.
PRINCIPAL_ENVIRON = "cartstream.principal"
LOCAL_ALGORITHMS = ("HS256",)
JWKS_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384", "PS512")
REALM = 'Bearer realm="cartstream"'
# Verified tokens kept per process (~0.5 kB each); beyond, the least recently used goes.
CACHE_MAX = 100_000


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    subject: str
    admin: bool
    expires_at: float


def unauthorized(message: str, *, token_given: bool = True) -> ApiError:
    """401 with the RFC 6750 challenge."""
    challenge = f'{REALM}, error="invalid_token"' if token_given else REALM
    return ApiError(401, "UNAUTHORIZED", message, headers={"WWW-Authenticate": challenge})


def forbidden(message: str, field: str | None = None) -> ApiError:
    """403: a valid token that does not allow this request."""
    return ApiError(403, "FORBIDDEN", message, field)


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer …` header, or 401."""
    if not authorization:
        raise unauthorized("a bearer token is required", token_given=False)
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("the Authorization header must be `Bearer <token>`",
                           token_given=False)
    return token


def _scopes(claims: dict[str, Any]) -> set[str]:
    # OAuth 2 / Keycloak / Auth0 send `scope` as one space-separated string; Okta and Azure
    # send `scp`, a list (or a string).
    found: set[str] = set()
    for claim in ("scope", "scp"):
        value = claims.get(claim)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, str))
    return found


class TokenCache:
    """Verified tokens -> their principal: bounded (least recently used goes), each entry
    dropped at its token's `exp` (+ leeway, as PyJWT allows).

    The key is the whole token string, signature included, so a hit is the very token that
    passed every check (signature, issuer, audience, algorithm) with this verifier's rules;
    a token that failed is never put. No lock: each OrderedDict call is atomic under the GIL,
    and a race between threads can only cost a re-verification or one entry over the bound.
    """

    def __init__(self, max_size: int, leeway_s: int, clock: Callable[[], float]) -> None:
        self._entries: OrderedDict[str, Principal] = OrderedDict()
        self._max_size = max_size
        self._leeway_s = leeway_s
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, token: str) -> bool:
        return token in self._entries

    def get(self, token: str) -> Principal | None:
        """The cached principal; None when not cached; 401 when cached but expired."""
        principal = self._entries.get(token)
        if principal is None:
            return None
        if principal.expires_at + self._leeway_s <= self._clock():  # self.expired, inlined
            self._entries.pop(token, None)
            raise unauthorized("invalid token: Signature has expired")
        try:
            self._entries.move_to_end(token)
        except KeyError:  # evicted by another thread since the get: still a verified token
            pass
        return principal

    def put(self, token: str, principal: Principal) -> None:
        """Remember a verified token, evicting the least recently used beyond the bound."""
        self._entries[token] = principal
        while len(self._entries) > self._max_size:
            try:
                self._entries.popitem(last=False)
            except KeyError:  # emptied by another thread
                break

    def expired(self, principal: Principal) -> bool:
        """Whether its token is past `exp` (+ leeway) by this cache's clock."""
        return principal.expires_at + self._leeway_s <= self._clock()


class TokenVerifier:
    """Verifies bearer tokens and remembers the verified ones until they expire.

    Verifying costs far more than reading a cached cart (PyJWT parses and checks the token
    in Python: ~0.1-0.3 ms here against ~2 us for a cache hit); a client sends the same token
    for an hour, so each process checks it once.
    """

    def __init__(self, key_for: Callable[[str], Any], algorithms: tuple[str, ...], *,
                 issuer: str, audience: str, admin_scope: str, leeway_s: int = 0,
                 clock: Callable[[], float] = time.time, cache_size: int = CACHE_MAX,
                 check_alg_first: bool = True) -> None:
        self._key_for = key_for
        self._algorithms = list(algorithms)
        self._issuer = issuer
        self._audience = audience
        self._admin_scope = admin_scope
        self._leeway_s = leeway_s
        self._check_alg_first = check_alg_first
        self.cache = TokenCache(cache_size, leeway_s, clock)

    def verify(self, token: str) -> Principal:
        """The token's principal, or 401 (ApiError) when it is not acceptable."""
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        principal = self._decode(token)
        # PyJWT checked `exp` on the wall clock; the cache answers by its own clock, so one
        # clock decides (they are the same one outside tests).
        if self.cache.expired(principal):
            raise unauthorized("invalid token: Signature has expired")
        self.cache.put(token, principal)
        return principal

    def _decode(self, token: str) -> Principal:
        try:
            # Refuse a foreign algorithm (`none`, HS256 against a JWKS) before any key lookup,
            # so such a token never makes the JWKS client fetch. With one fixed key, PyJWT's
            # own check (before the signature's) is enough and saves parsing the token twice.
            if self._check_alg_first:
                alg = jwt.get_unverified_header(token).get("alg")
                if alg not in self._algorithms:
                    raise unauthorized(f"invalid token: algorithm {alg!r} is not accepted")
            claims = jwt.decode(
                token, self._key_for(token), algorithms=self._algorithms,
                audience=self._audience, issuer=self._issuer, leeway=self._leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWKClientConnectionError:
            raise ApiError(503, "AUTH_UNAVAILABLE", "the token signing keys cannot be fetched",
                           headers={"Retry-After": "5"}) from None
        except (jwt.PyJWTError, jwt.PyJWKClientError) as exc:
            raise unauthorized(f"invalid token: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise unauthorized("invalid token: `sub` must be a non-empty string")
        return Principal(subject, self._admin_scope in _scopes(claims), float(claims["exp"]))


def verifier_from_settings(settings: AuthSettings) -> TokenVerifier:
    """The verifier the settings choose: the JWKS URL if set, else the local HS256 key."""
    common = {"issuer": settings.jwt_issuer, "audience": settings.jwt_audience,
              "admin_scope": settings.jwt_admin_scope, "leeway_s": settings.jwt_leeway_s}
    if settings.jwt_jwks_url:
        # Keys cached for 5 minutes; an unknown `kid` (rotation) refetches the set.
        client = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True, lifespan=300,
                                 timeout=5)
        lock = threading.Lock()  # one fetch at a time per process

        def jwks_key(token: str) -> Any:
            with lock:
                return client.get_signing_key_from_jwt(token).key

        return TokenVerifier(jwks_key, JWKS_ALGORITHMS, **common)
    key = settings.jwt_key()
    return TokenVerifier(lambda _token: key, LOCAL_ALGORITHMS, check_alg_first=False, **common)


def issue_token(settings: AuthSettings, subject: str, *, admin: bool = False,
                ttl_s: int = 3600, now: float | None = None) -> str:
    """A token signed with the local HS256 key (`cartstream token`, tests, benchmarks)."""
    if settings.jwt_jwks_url:
        raise ValueError("JWT_JWKS_URL is set: tokens come from the identity provider")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": subject, "iss": settings.jwt_issuer,
                              "aud": settings.jwt_audience, "iat": issued,
                              "exp": issued + ttl_s}
    if admin:
        claims["scope"] = settings.jwt_admin_scope
    return jwt.encode(claims, settings.jwt_key(), algorithm="HS256")


def check_owner(principal: Principal | None, customer_id: str, *, admin_allowed: bool) -> None:
    """403 unless the principal is that customer (or, where allowed, an admin).

    No principal means the dev profile, where nothing is checked.
    """
    if principal is None or principal.subject == customer_id:
        return
    if admin_allowed and principal.admin:
        return
    raise forbidden(f"this token does not act for customer {customer_id}", "customerId")


def check_command(environ: dict[str, Any], customer_id: str) -> None:
    """A command may only change the token's own cart (admins included: they only read)."""
    check_owner(environ.get(PRINCIPAL_ENVIRON), customer_id, admin_allowed=False)
