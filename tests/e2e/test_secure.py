"""The secure profile through a running system: tokens, ownership, browsers, limits, secrets."""

from __future__ import annotations

import base64
import json
import stat
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import redis
import requests
from confluent_kafka import KafkaError
from cryptography.hazmat.primitives.asymmetric import rsa

from cart_contract.layout import waiting_key
from tests.e2e.test_system import SEED_PRODUCTS, console_produce
from tests.support.connectors import wait_until
from tests.support.ports import free_port

pytestmark = pytest.mark.e2e


def new_customer() -> str:
    return f"sec-{uuid.uuid4().hex[:8]}"


def post(system, command: str, body: dict, customer: str | None = None, **kw):
    headers = {**system.auth(customer or body.get("customerId")), **kw.pop("headers", {})}
    return requests.post(f"{system.write_url}/api/v1/{command}", json=body, headers=headers,
                         timeout=30, **kw)


def accepted(resp: requests.Response) -> dict:
    assert resp.status_code == 202, resp.text
    return resp.json()


def read_after(system, customer: str, ack: dict) -> dict:
    resp = requests.get(f"{system.read_url}/api/v1/{customer}", headers=system.auth(customer),
                        params={"minOffset": ack["readToken"], "timeout": 30000}, timeout=40)
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture(scope="module")
def catalog(secure_system) -> None:
    console_produce(secure_system, secure_system.env["TOPIC_PRODUCTS"], SEED_PRODUCTS)
    deadline = time.monotonic() + 60
    for pid in ("1", "2"):
        url = f"{secure_system.read_url}/api/v1/products/{pid}"
        while requests.get(url, headers=secure_system.auth("any"), timeout=5).status_code != 200:
            assert time.monotonic() < deadline, f"product {pid} never landed"
            time.sleep(0.2)


def test_seed_flow_with_tokens(secure_system, catalog) -> None:
    s, customer = secure_system, new_customer()
    for _ in range(3):
        accepted(post(s, "add", {"customerId": customer, "itemId": "1", "qty": 1}))
    accepted(post(s, "add", {"customerId": customer, "itemId": "2", "qty": 1}))
    ack = accepted(post(s, "remove", {"customerId": customer, "itemId": "2", "qty": 1}))
    cart = read_after(s, customer, ack)
    assert [(li["itemId"], li["qty"]) for li in cart["lineItems"]] == [("1", 3)]
    assert cart["totalPrice"] == "195000.00"
    ack = accepted(post(s, "checkout", {"customerId": customer}))
    assert read_after(s, customer, ack)["status"] == "CHECKED_OUT"
    # Orders come from PostgreSQL, whose sink may land the checkout after Redis's did.
    deadline = time.monotonic() + 30
    while True:
        orders = requests.get(f"{s.read_url}/api/v1/{customer}/orders",
                              headers=s.auth(customer), timeout=10)
        assert orders.status_code == 200, orders.text
        if orders.json()["items"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(orders.json()["items"]) == 1
    assert orders.headers["Cache-Control"] == "no-store"
    assert orders.headers["X-Content-Type-Options"] == "nosniff"


def test_cross_customer_requests_are_403_both_ways(secure_system, catalog) -> None:
    s, alice, bob = secure_system, new_customer(), new_customer()
    ack_a = accepted(post(s, "add", {"customerId": alice, "itemId": "1", "qty": 1}))
    ack_b = accepted(post(s, "add", {"customerId": bob, "itemId": "2", "qty": 1}))
    read_after(s, alice, ack_a)
    read_after(s, bob, ack_b)
    for me, other in ((alice, bob), (bob, alice)):
        resp = post(s, "add", {"customerId": other, "itemId": "1", "qty": 1}, customer=me)
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "FORBIDDEN"
        for path in (f"/api/v1/{other}", f"/api/v1/{other}/orders"):
            resp = requests.get(s.read_url + path, headers=s.auth(me), timeout=10)
            assert resp.status_code == 403, path
    # Cart queries are for admins; an admin may read anyone's cart but changes none.
    carts = f"{s.read_url}/api/v1/carts"
    assert requests.get(carts, headers=s.auth(alice), timeout=10).status_code == 403
    assert requests.get(carts, headers=s.auth(admin=True), timeout=10).status_code == 200
    assert requests.get(f"{s.read_url}/api/v1/{alice}", headers=s.auth(admin=True),
                        timeout=10).status_code == 200
    resp = post(s, "clear", {"customerId": alice}, headers=s.auth(admin=True))
    assert resp.status_code == 403


def _claims(**over) -> dict:
    now = int(time.time())
    return {"sub": "sec-x", "iss": "cartstream", "aud": "cartstream", "iat": now,
            "exp": now + 600, **over}


def test_missing_and_bad_tokens_are_401_on_both_apis(secure_system) -> None:
    s = secure_system
    key = (s.run_dir / "secrets" / "jwt-hs256").read_text().strip()
    bad = {
        "missing": None,
        "forged": jwt.encode(_claims(), "not-the-key-not-the-key-not-the-k", algorithm="HS256"),
        "expired": jwt.encode(_claims(exp=int(time.time()) - 120), key, algorithm="HS256"),
        "alg none": jwt.encode(_claims(), None, algorithm="none"),
        "wrong audience": jwt.encode(_claims(aud="someone-else"), key, algorithm="HS256"),
        "wrong issuer": jwt.encode(_claims(iss="someone-else"), key, algorithm="HS256"),
    }
    for name, token in bad.items():
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        for resp in (
            requests.post(f"{s.write_url}/api/v1/add", json={"customerId": "sec-x", "itemId": "1",
                                                            "qty": 1}, headers=headers, timeout=10),
            requests.get(f"{s.read_url}/api/v1/sec-x", headers=headers, timeout=10),
        ):
            assert resp.status_code == 401, (name, resp.text)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer"), name
            assert resp.json()["error"]["code"] == "UNAUTHORIZED"


def test_health_and_openapi_stay_open_and_say_the_profile(secure_system) -> None:
    s = secure_system
    for base in (s.write_url, s.read_url):
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        ready = requests.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["profile"] == "secure"
        doc = requests.get(f"{base}/openapi.json", timeout=5).json()
        assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
        assert all(op["security"] == [{"bearerAuth": []}] for path, item in doc["paths"].items()
                   if path.startswith("/api/v1/") for op in item.values())


def test_browser_safety(secure_system) -> None:
    s, customer = secure_system, new_customer()
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    resp = requests.options(f"{s.write_url}/api/v1/add", timeout=5,
                            headers={"Origin": "https://evil.example", **preflight})
    assert resp.status_code == 403 and "Access-Control-Allow-Origin" not in resp.headers
    resp = requests.options(f"{s.write_url}/api/v1/add", timeout=5,
                            headers={"Origin": "https://shop.example", **preflight})
    assert resp.status_code == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    # A form post carrying a JSON body (what a cross-site form can send) is refused.
    resp = requests.post(f"{s.write_url}/api/v1/add", headers={
        **s.auth(customer), "Content-Type": "application/x-www-form-urlencoded"},
        data=json.dumps({"customerId": customer, "itemId": "1", "qty": 1}), timeout=10)
    assert resp.status_code == 415
    # DNS rebinding: a foreign Host is refused, even on the open paths.
    for base in (s.write_url, s.read_url):
        resp = requests.get(f"{base}/healthz", headers={"Host": "evil.example"}, timeout=5)
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "HOST_NOT_ALLOWED"


def test_a_burst_of_commands_gets_429_with_retry_after(secure_system, catalog) -> None:
    s, customer = secure_system, new_customer()
    # RATE_LIMIT_COMMANDS=30 per fixed 60 s window: a burst meets 429 within 31 commands, or
    # within 61 when it straddles a window's end.
    statuses = []
    for _ in range(61):
        statuses.append(post(s, "add", {"customerId": customer, "itemId": "1", "qty": 1}))
        if statuses[-1].status_code == 429:
            break
    codes = [r.status_code for r in statuses]
    assert codes[-1] == 429 and set(codes[:-1]) == {202}, codes
    limited = statuses[-1]
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    other = new_customer()  # another principal is not limited by this one's burst
    accepted(post(s, "add", {"customerId": other, "itemId": "1", "qty": 1}))


def test_one_principal_holds_a_bounded_number_of_waits(secure_system) -> None:
    s, customer = secure_system, new_customer()
    url = f"{s.read_url}/api/v1/{customer}"
    far = {"minOffset": "0:999999999"}  # never reached: the wait lasts its timeout
    first: list[requests.Response] = []
    waiting = threading.Thread(target=lambda: first.append(requests.get(
        url, headers=s.auth(customer), params={**far, "timeout": 5000}, timeout=30)))
    waiting.start()
    # The first wait must hold the slot before the others ask (else one of them takes it):
    # its counter in Redis says when.
    store = redis.Redis.from_url(s.env["REDIS_URL"])
    counter = waiting_key(customer, s.env.get("REDIS_KEY_PREFIX", ""))
    wait_until(lambda: store.get(counter) == b"1", 15, "the first wait to hold its slot",
               every_s=0.02)
    # MAX_WAITS_PER_PRINCIPAL=1: while the first wait is open, another one is refused.
    refused = None
    while waiting.is_alive() and refused is None:
        second = requests.get(url, headers=s.auth(customer), params={**far, "timeout": 100},
                              timeout=20)
        if second.status_code == 429:
            refused = second
        time.sleep(0.1)
    waiting.join()
    assert refused is not None and refused.headers["Retry-After"]
    assert refused.json()["error"]["code"] == "TOO_MANY_REQUESTS"
    assert "open at once" in refused.json()["error"]["message"]  # the cap, not the rate
    assert first[0].status_code in (404, 504)  # the first one waited its time out
    # Its slot is given back just after its answer was sent (the server's `finally`): a
    # request racing that to another worker would meet the cap still held.
    wait_until(lambda: store.get(counter) in (None, b"0"), 15,
               "the first wait to give its slot back", every_s=0.02)
    again = requests.get(url, headers=s.auth(customer), params={**far, "timeout": 100},
                         timeout=20)
    assert again.status_code != 429  # released when it ended
    other = new_customer()  # another principal was never limited by this one's waits
    assert requests.get(f"{s.read_url}/api/v1/{other}", headers=s.auth(other),
                        params={**far, "timeout": 100}, timeout=20).status_code != 429


def test_secrets_are_files_only_their_owner_reads(secure_system) -> None:
    secrets_dir = secure_system.run_dir / "secrets"
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    files = list(secrets_dir.iterdir())
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    key = (secrets_dir / "jwt-hs256").read_text().strip()
    for name in ("write-api", "read-api"):
        assert key not in (secure_system.run_dir / f"{name}.log").read_text()


# ---------------------------------------------------------------- JWKS


class _Jwks(BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_tokens_of_an_identity_provider_are_checked_against_its_jwks(secure_system) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    _Jwks.body = json.dumps({"keys": [{"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256",
                                       "n": _b64(pub.n), "e": _b64(pub.e)}]}).encode()
    idp = ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    threading.Thread(target=idp.serve_forever, daemon=True).start()
    s = secure_system
    env = {**s.env, "READ_PORT": str(free_port()), "JWT_ISSUER": "https://idp.example/",
           "JWT_AUDIENCE": "cartstream-api",
           "JWT_JWKS_URL": f"http://127.0.0.1:{idp.server_address[1]}/jwks.json"}
    jwks_system = type(s)(env=env, run_dir=s.run_dir)
    jwks_system.start("read-api")
    try:
        jwks_system.procs["read-api"].poll()
        base = f"http://127.0.0.1:{env['READ_PORT']}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "JWKS read API never came up"
            time.sleep(0.2)
        now = int(time.time())
        claims = {"sub": "sec-jwks", "iss": "https://idp.example/", "aud": "cartstream-api",
                  "iat": now, "exp": now + 300}

        def get(token: str) -> requests.Response:
            return requests.get(f"{base}/api/v1/sec-jwks",
                                headers={"Authorization": f"Bearer {token}"}, timeout=10)

        good = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        assert get(good).status_code == 404  # authenticated: the customer has no cart yet
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert get(jwt.encode(claims, other, algorithm="RS256",
                              headers={"kid": "k1"})).status_code == 401
        assert get(jwt.encode({**claims, "aud": "x"}, key, algorithm="RS256",
                              headers={"kid": "k1"})).status_code == 401
        assert get(jwt.encode({**claims, "iss": "https://evil/"}, key, algorithm="RS256",
                              headers={"kid": "k1"})).status_code == 401
        # The local HS256 key means nothing to a JWKS-verifying API.
        assert get(s.token("sec-jwks")).status_code == 401
    finally:
        jwks_system.stop_all()
        idp.shutdown()


# ------------------------------------------------------------------ Kafka: SASL/SCRAM and ACLs


def _produce(conf: dict, topic: str) -> tuple[list, list]:
    """Produce one record; (delivery errors, client errors) within the timeout."""
    from confluent_kafka import Producer

    errors: list = []
    delivered: list = []
    producer = Producer({**conf, "message.timeout.ms": 15000, "log_level": 0,
                         "error_cb": errors.append})
    producer.produce(topic, b"v", key=b"k", on_delivery=lambda err, _msg: delivered.append(err))
    producer.flush(25)
    return delivered, errors


def test_anonymous_and_wrong_password_kafka_clients_are_refused(secure_system) -> None:
    s = secure_system
    kafka = s.principals.kafka
    topic = s.env["TOPIC_PRODUCTS"]
    # Without SASL the client listener does not even answer metadata.
    delivered, _ = _produce({"bootstrap.servers": kafka.bootstrap}, topic)
    assert delivered and delivered[0] is not None
    # A principal that exists, with a wrong password: an authentication error, nothing written.
    wrong = kafka.client(s.principals.user("catalog"), "not-the-password")
    delivered, errors = _produce(wrong, topic)
    assert delivered and delivered[0] is not None
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_the_catalog_principal_may_only_write_the_catalog(secure_system) -> None:
    s = secure_system
    p = s.principals
    catalog = p.kafka.client(p.user("catalog"), p.password("catalog"),
                             **{"enable.idempotence": True})
    delivered, _ = _produce(catalog, s.env["TOPIC_CART_EVENTS"])
    assert [e.code() for e in delivered] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    delivered, _ = _produce(catalog, s.env["TOPIC_PRODUCTS"])
    assert delivered == [None]
    # The write API's principal, for its part, cannot read the event store back.
    from confluent_kafka import Consumer

    consumer = Consumer(p.kafka.client(p.user("write-api"), p.password("write-api"),
                                       **{"group.id": "cartstream-redis", "log_level": 0}))
    try:
        consumer.subscribe([s.env["TOPIC_CART_EVENTS"]])
        msg = None
        deadline = time.monotonic() + 20
        while msg is None and time.monotonic() < deadline:
            msg = consumer.poll(1)
        assert msg is not None and msg.error() is not None
        assert msg.error().code() in (KafkaError.GROUP_AUTHORIZATION_FAILED,
                                      KafkaError.TOPIC_AUTHORIZATION_FAILED)
    finally:
        consumer.close()
