"""The write API over HTTP (Flask test client) with a fake publisher and catalog: no I/O."""

from __future__ import annotations

import io
import uuid
from typing import Any

import orjson
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cart_contract import EventType, decode_cart_event
from cart_write.app import create_app
from cart_write.config import Config
from cart_write.publisher import Ack, PublishUnavailable
from tests.support.idempotency import MemoryIdempotencyStore

TOPIC = "cart-events-unit"


def make_app(config: Config, **deps: Any) -> Any:
    """The write API with no I/O: idempotency records in memory unless a test passes a store."""
    deps.setdefault("idempotency", MemoryIdempotencyStore())
    return create_app(config, **deps)


class FakePublisher:
    """Records what would have gone to Kafka; partitions by a stable hash of the key."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []
        self.down = False
        self.is_ready = True

    def publish(self, topic: str, key: bytes, value: bytes) -> Ack:
        if self.down:
            raise PublishUnavailable("broker down (fake)")
        self.records.append((topic, key, value))
        return Ack(partition=sum(key) % 6, offset=len(self.records) - 1)

    def ready(self) -> bool:
        return self.is_ready

    def close(self) -> None:
        pass


class FakeCatalog:
    """Answers from a fixed set; None when there is no catalog view."""

    def __init__(self, products: set[str] | None = None) -> None:
        self.products = products
        self.asked: list[str] = []

    def knows(self, product_id: str) -> bool | None:
        self.asked.append(product_id)
        if self.products is None:
            return None
        return product_id in self.products


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def catalog() -> FakeCatalog:
    return FakeCatalog()


@pytest.fixture
def client(publisher: FakePublisher, catalog: FakeCatalog) -> FlaskClient:
    app = make_app(Config(topic_cart_events=TOPIC), publisher=publisher, catalog=catalog)
    return app.test_client()


def post(client: FlaskClient, path: str, body: Any, headers: dict[str, str] | None = None,
         content_type: str | None = "application/json"):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    hdrs = dict(headers or {})
    if content_type is not None:
        hdrs["Content-Type"] = content_type
    return client.post(path, data=data, headers=hdrs)


def assert_error(resp: Any, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code
    assert body["error"]["field"] == field
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


# ---------------------------------------------------------------- the seed's commands


def test_add_is_acknowledged_with_its_position_and_lands_as_a_contract_event(
    client: FlaskClient, publisher: FakePublisher
) -> None:
    resp = post(client, "/api/v1/add", {"customerId": "123", "itemId": "1", "qty": 1})
    assert resp.status_code == 202
    body = resp.get_json()
    assert set(body) == {"eventId", "type", "customerId", "partition", "offset", "readToken"}
    assert body["type"] == "ITEM_ADDED" and body["customerId"] == "123"
    [(topic, key, value)] = publisher.records
    assert (topic, key) == (TOPIC, b"123")
    assert (body["partition"], body["offset"]) == (sum(b"123") % 6, 0)
    assert body["readToken"] == f"{sum(b'123') % 6}:0"
    event = decode_cart_event(value)
    assert event.event_id == body["eventId"]
    assert (event.type, event.customer_id, event.item_id, event.qty) == (
        EventType.ITEM_ADDED, "123", "1", 1)
    uuid.UUID(body["eventId"])


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/api/v1/remove", {"customerId": "123", "itemId": "2", "qty": 1},
         (EventType.ITEM_REMOVED, "123", "2", 1)),
        ("/api/v1/remove", {"customerId": "123", "itemId": "2"},
         (EventType.ITEM_REMOVED, "123", "2", None)),
        ("/api/v1/remove", {"customerId": "123", "itemId": "2", "qty": None},
         (EventType.ITEM_REMOVED, "123", "2", None)),
        ("/api/v1/checkout", {"customerId": "123"}, (EventType.CHECKOUT, "123", None, None)),
        ("/api/v1/clear", {"customerId": "123"}, (EventType.CART_CLEARED, "123", None, None)),
        # Numeric ids, as in the seed data, become strings.
        ("/api/v1/add", {"customerId": 123, "itemId": 1, "qty": 3},
         (EventType.ITEM_ADDED, "123", "1", 3)),
    ],
)
def test_commands_round_trip_through_the_contract(
    client: FlaskClient, publisher: FakePublisher, path: str, body: dict[str, Any],
    expected: tuple[Any, ...],
) -> None:
    resp = post(client, path, body)
    assert resp.status_code == 202, resp.get_data(as_text=True)
    event = decode_cart_event(publisher.records[-1][2])
    assert (event.type, event.customer_id, event.item_id, event.qty) == expected
    assert publisher.records[-1][1] == expected[1].encode()
    assert resp.get_json()["type"] == expected[0].value


@pytest.mark.parametrize("content_type", [
    "application/json",
    "application/json; charset=utf-8",
    "application/vnd.cartstream+json",
])
def test_json_content_types_are_accepted(
    client: FlaskClient, publisher: FakePublisher, content_type: str | None
) -> None:
    resp = post(client, "/api/v1/clear", {"customerId": "123"}, content_type=content_type)
    assert resp.status_code == 202
    assert len(publisher.records) == 1


def test_each_request_gets_a_fresh_event_id_without_an_idempotency_key(
    client: FlaskClient,
) -> None:
    ids = {post(client, "/api/v1/clear", {"customerId": "1"}).get_json()["eventId"]
           for _ in range(3)}
    assert len(ids) == 3


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"itemId": "1", "qty": 1}, "MISSING_FIELD", "customerId"),
        ({"customerId": None, "itemId": "1", "qty": 1}, "MISSING_FIELD", "customerId"),
        ({"customerId": "", "itemId": "1", "qty": 1}, "INVALID_ID", "customerId"),
        ({"customerId": "x" * 65, "itemId": "1", "qty": 1}, "INVALID_ID", "customerId"),
        ({"customerId": "a b", "itemId": "1", "qty": 1}, "INVALID_ID", "customerId"),
        ({"customerId": "a/b", "itemId": "1", "qty": 1}, "INVALID_ID", "customerId"),
        ({"customerId": "ü", "itemId": "1", "qty": 1}, "INVALID_ID", "customerId"),
        ({"customerId": "a\n", "itemId": "1", "qty": 1}, "INVALID_ID", "customerId"),
        ({"customerId": True, "itemId": "1", "qty": 1}, "WRONG_TYPE", "customerId"),
        ({"customerId": 1.5, "itemId": "1", "qty": 1}, "WRONG_TYPE", "customerId"),
        ({"customerId": ["1"], "itemId": "1", "qty": 1}, "WRONG_TYPE", "customerId"),
        ({"customerId": {"id": 1}, "itemId": "1", "qty": 1}, "WRONG_TYPE", "customerId"),
        ({"customerId": "1", "qty": 1}, "MISSING_FIELD", "itemId"),
        ({"customerId": "1", "itemId": "", "qty": 1}, "INVALID_ID", "itemId"),
        ({"customerId": "1", "itemId": "#1", "qty": 1}, "INVALID_ID", "itemId"),
        ({"customerId": "1", "itemId": False, "qty": 1}, "WRONG_TYPE", "itemId"),
        ({"customerId": "1", "itemId": "1"}, "MISSING_FIELD", "qty"),
        ({"customerId": "1", "itemId": "1", "qty": None}, "MISSING_FIELD", "qty"),
        ({"customerId": "1", "itemId": "1", "qty": 0}, "INVALID_QTY", "qty"),
        ({"customerId": "1", "itemId": "1", "qty": -1}, "INVALID_QTY", "qty"),
        ({"customerId": "1", "itemId": "1", "qty": 10001}, "INVALID_QTY", "qty"),
        ({"customerId": "1", "itemId": "1", "qty": 1.0}, "WRONG_TYPE", "qty"),
        ({"customerId": "1", "itemId": "1", "qty": 1.5}, "WRONG_TYPE", "qty"),
        ({"customerId": "1", "itemId": "1", "qty": "1"}, "WRONG_TYPE", "qty"),
        ({"customerId": "1", "itemId": "1", "qty": True}, "WRONG_TYPE", "qty"),
        ({"customerId": "1", "itemId": "1", "qty": False}, "WRONG_TYPE", "qty"),
        ({"customerId": "1", "itemId": "1", "qty": [1]}, "WRONG_TYPE", "qty"),
    ],
)
def test_add_rejects_each_invalid_field_with_400(
    client: FlaskClient, publisher: FakePublisher, body: dict[str, Any], code: str, field: str
) -> None:
    assert_error(post(client, "/api/v1/add", body), 400, code, field)
    assert publisher.records == []


@pytest.mark.parametrize(
    ("path", "body", "code", "field"),
    [
        ("/api/v1/remove", {"customerId": "1"}, "MISSING_FIELD", "itemId"),
        ("/api/v1/remove", {"customerId": "1", "itemId": "2", "qty": 0}, "INVALID_QTY", "qty"),
        ("/api/v1/remove", {"customerId": "1", "itemId": "2", "qty": "all"}, "WRONG_TYPE", "qty"),
        ("/api/v1/checkout", {}, "MISSING_FIELD", "customerId"),
        ("/api/v1/checkout", {"customerId": "x" * 65}, "INVALID_ID", "customerId"),
        ("/api/v1/clear", {"customerId": False}, "WRONG_TYPE", "customerId"),
    ],
)
def test_other_commands_validate_too(
    client: FlaskClient, publisher: FakePublisher, path: str, body: dict[str, Any], code: str,
    field: str,
) -> None:
    assert_error(post(client, path, body), 400, code, field)
    assert publisher.records == []


@pytest.mark.parametrize(("qty", "ident"), [(1, "a"), (10000, "x" * 64),
                                            (5, "A-z.0_9:@x")])
def test_boundary_values_are_accepted(client: FlaskClient, qty: int, ident: str) -> None:
    resp = post(client, "/api/v1/add", {"customerId": ident, "itemId": ident, "qty": qty})
    assert resp.status_code == 202


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ident=st.from_regex(r"\A[A-Za-z0-9._:@-]{1,64}\Z").filter(
           lambda i: i not in {".", "..", "carts", "products"}),  # the read API's URLs
       qty=st.integers(min_value=1, max_value=10000))
def test_any_valid_id_and_qty_round_trip(client: FlaskClient, publisher: FakePublisher,
                                         ident: str, qty: int) -> None:
    resp = post(client, "/api/v1/add", {"customerId": ident, "itemId": ident, "qty": qty})
    assert resp.status_code == 202
    event = decode_cart_event(publisher.records[-1][2])
    assert (event.customer_id, event.item_id, event.qty) == (ident, ident, qty)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ident=st.text(min_size=1, max_size=80).filter(
    lambda s: not (len(s) <= 64 and all(c.isascii() and (c.isalnum() or c in "._:@-")
                                        for c in s))))
def test_any_invalid_id_is_rejected(client: FlaskClient, publisher: FakePublisher,
                                    ident: str) -> None:
    resp = post(client, "/api/v1/checkout", {"customerId": ident})
    assert_error(resp, 400, "INVALID_ID", "customerId")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "INVALID_JSON"),
        (b"{", "INVALID_JSON"),
        (b"{'customerId': '1'}", "INVALID_JSON"),
        (b"[]", "NOT_AN_OBJECT"),
        (b'"customerId"', "NOT_AN_OBJECT"),
        (b"42", "NOT_AN_OBJECT"),
        (b"null", "NOT_AN_OBJECT"),
    ],
)
def test_a_json_body_that_is_not_an_object_is_400(client: FlaskClient, data: bytes,
                                                  code: str) -> None:
    assert_error(post(client, "/api/v1/clear", data), 400, code)


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/v1/checkout", {"customerId": "c1", "itemId": "9"}, "itemId"),
    ("/api/v1/clear", {"customerId": "c1", "qty": 1}, "qty"),
    ("/api/v1/add", {"customerId": "c1", "itemId": "1", "qty": 1, "note": "x"}, "note"),
    ("/api/v1/remove", {"customerId": "c1", "itemId": "1", "CustomerId": "c2"}, "CustomerId"),
])
def test_unknown_fields_are_400_naming_the_field(client: FlaskClient, publisher: FakePublisher,
                                                 path: str, body: dict[str, Any],
                                                 field: str) -> None:
    assert_error(post(client, path, body), 400, "UNKNOWN_FIELD", field)
    assert publisher.records == []


@pytest.mark.parametrize(("raw", "field"), [
    (b'{"customerId":"1","customerId":"2"}', "customerId"),
    (b'{"customerId":"1","itemId":"1","qty":1,"qty":2}', "qty"),
])
def test_duplicate_keys_are_400(client: FlaskClient, publisher: FakePublisher, raw: bytes,
                                field: str) -> None:
    path = "/api/v1/clear" if b"qty" not in raw else "/api/v1/add"
    assert_error(post(client, path, raw), 400, "DUPLICATE_FIELD", field)
    assert publisher.records == []


@pytest.mark.parametrize(("body", "field"), [
    ({"customerId": "."}, "customerId"),
    ({"customerId": ".."}, "customerId"),
    ({"customerId": "carts"}, "customerId"),
    ({"customerId": "products"}, "customerId"),
    ({"customerId": "1", "itemId": ".."}, "itemId"),
])
def test_ids_the_read_api_cannot_serve_back_are_400(client: FlaskClient,
                                                    publisher: FakePublisher,
                                                    body: dict[str, Any], field: str) -> None:
    path = "/api/v1/remove" if "itemId" in body else "/api/v1/clear"
    assert_error(post(client, path, body), 400, "INVALID_ID", field)
    assert publisher.records == []


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (b'{"customerId":"1"}', "text/plain"),
        (b'{"customerId":"1"}', "application/xml"),
        (b"customerId=1", "application/x-www-form-urlencoded"),
        (b"customerId=1", None),
        (b"--x\r\n", "multipart/form-data; boundary=x"),
        # What a cross-site form or a bare `curl -d` sends: JSON text, but not declared JSON.
        (b'{"customerId":"1"}', "application/x-www-form-urlencoded"),
        (b'{"customerId":"1"}', None),
    ],
)
def test_non_json_bodies_are_415(client: FlaskClient, publisher: FakePublisher, data: bytes,
                                 content_type: str | None) -> None:
    assert_error(post(client, "/api/v1/clear", data, content_type=content_type), 415,
                 "UNSUPPORTED_MEDIA_TYPE")
    assert publisher.records == []


# ---------------------------------------------------------------- HTTP errors


def test_unknown_path_is_404_json(client: FlaskClient) -> None:
    assert_error(client.get("/api/v1/nope"), 404, "NOT_FOUND")
    assert_error(post(client, "/api/v2/add", {"customerId": "1"}), 404, "NOT_FOUND")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_wrong_method_is_405_json_with_allow(client: FlaskClient, method: str) -> None:
    resp = client.open("/api/v1/add", method=method)
    assert_error(resp, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in resp.headers["Allow"]


def test_post_to_a_probe_is_405(client: FlaskClient) -> None:
    assert_error(client.post("/healthz"), 405, "METHOD_NOT_ALLOWED")


def test_body_over_64_kib_is_413_and_64_kib_is_fine(
    client: FlaskClient, publisher: FakePublisher
) -> None:
    def body_of(size: int) -> bytes:
        head = b'{"customerId":"1"'
        return head + b" " * (size - len(head) - 1) + b"}"

    assert len(body_of(64 * 1024)) == 64 * 1024
    assert post(client, "/api/v1/clear", body_of(64 * 1024)).status_code == 202
    assert_error(post(client, "/api/v1/clear", body_of(64 * 1024 + 1)), 413,
                 "PAYLOAD_TOO_LARGE")
    assert len(publisher.records) == 1


@pytest.mark.parametrize(("size", "status"), [(64 * 1024, 202), (64 * 1024 + 1, 413)])
def test_a_chunked_body_is_limited_too(client: FlaskClient, size: int, status: int) -> None:
    head = b'{"customerId":"1"'
    data = head + b" " * (size - len(head) - 1) + b"}"
    resp = client.post("/api/v1/clear", input_stream=io.BytesIO(data),
                       headers={"Content-Type": "application/json"},
                       environ_overrides={"wsgi.input_terminated": True})
    assert resp.status_code == status
    if status == 413:
        assert_error(resp, 413, "PAYLOAD_TOO_LARGE")


def test_kafka_unavailable_is_503_with_retry_after(
    client: FlaskClient, publisher: FakePublisher
) -> None:
    publisher.down = True
    resp = post(client, "/api/v1/add", {"customerId": "1", "itemId": "1", "qty": 1})
    assert_error(resp, 503, "KAFKA_UNAVAILABLE")
    assert int(resp.headers["Retry-After"]) >= 1
    publisher.down = False
    assert post(client, "/api/v1/add", {"customerId": "1", "itemId": "1", "qty": 1}
                ).status_code == 202


def test_an_unexpected_bug_is_a_json_500_not_html(catalog: FakeCatalog) -> None:
    class Broken(FakePublisher):
        def publish(self, topic: str, key: bytes, value: bytes) -> Ack:
            raise RuntimeError("bug")

    app = make_app(Config(), publisher=Broken(), catalog=catalog)
    resp = post(app.test_client(), "/api/v1/clear", {"customerId": "1"})
    assert_error(resp, 500, "INTERNAL")


def test_healthz_and_readyz(client: FlaskClient, publisher: FakePublisher) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    publisher.is_ready = False
    resp = client.get("/readyz")
    assert_error(resp, 503, "KAFKA_UNAVAILABLE")
    assert "Retry-After" in resp.headers
    assert client.get("/healthz").status_code == 200


# ---------------------------------------------------------------- idempotency


def add_with_key(client: FlaskClient, customer: Any, key: str, path: str = "/api/v1/add"):
    return post(client, path, {"customerId": customer, "itemId": "1", "qty": 1},
                headers={"Idempotency-Key": key})


def test_a_retried_request_gets_the_stored_answer_and_publishes_nothing(
        client: FlaskClient, publisher: FakePublisher) -> None:
    first = add_with_key(client, "123", "k-1")
    again = add_with_key(client, "123", "k-1")
    assert first.status_code == again.status_code == 202
    assert again.data == first.data  # eventId, partition and offset, byte for byte
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(publisher.records) == 1
    assert uuid.UUID(first.get_json()["eventId"]).version == 5


def test_the_same_key_with_another_body_or_route_is_422_and_writes_nothing(
        client: FlaskClient, publisher: FakePublisher) -> None:
    assert add_with_key(client, "123", "k-2").status_code == 202
    other_qty = post(client, "/api/v1/add", {"customerId": "123", "itemId": "1", "qty": 2},
                     headers={"Idempotency-Key": "k-2"})
    assert_error(other_qty, 422, "IDEMPOTENCY_KEY_REUSED", "Idempotency-Key")
    assert_error(add_with_key(client, "124", "k-2"), 422, "IDEMPOTENCY_KEY_REUSED",
                 "Idempotency-Key")
    assert_error(add_with_key(client, "123", "k-2", "/api/v1/remove"), 422,
                 "IDEMPOTENCY_KEY_REUSED", "Idempotency-Key")
    assert len(publisher.records) == 1


def test_the_canonical_body_ignores_key_order_and_spacing(
        client: FlaskClient, publisher: FakePublisher) -> None:
    headers = {"Idempotency-Key": "k-3"}
    a = post(client, "/api/v1/add", b'{"customerId":"9","itemId":"1","qty":1}', headers)
    b = post(client, "/api/v1/add", b'{ "qty": 1, "itemId": "1", "customerId": 9 }', headers)
    assert a.status_code == b.status_code == 202 and a.data == b.data
    assert len(publisher.records) == 1


def test_a_key_whose_request_waits_for_its_ack_is_409(catalog: FakeCatalog) -> None:
    answers: list[Any] = []

    class RetriesWhileWaiting(FakePublisher):
        """While the first request waits for its ack, the client retries it."""

        def publish(self, topic: str, key: bytes, value: bytes) -> Ack:
            if not answers:
                answers.append(add_with_key(client, "1", "k-4"))
            return super().publish(topic, key, value)

    publisher = RetriesWhileWaiting()
    client = make_app(Config(), publisher=publisher, catalog=catalog).test_client()
    assert add_with_key(client, "1", "k-4").status_code == 202
    assert_error(answers[0], 409, "IDEMPOTENCY_KEY_IN_PROGRESS", "Idempotency-Key")
    assert "Retry-After" in answers[0].headers
    assert len(publisher.records) == 1


def test_a_key_is_freed_when_nothing_was_written(
        client: FlaskClient, publisher: FakePublisher) -> None:
    publisher.down = True
    assert add_with_key(client, "1", "k-5").status_code == 503
    publisher.down = False
    assert add_with_key(client, "1", "k-5").status_code == 202
    assert len(publisher.records) == 1


def test_records_unreachable_is_503_for_keyed_requests_only(
        publisher: FakePublisher, catalog: FakeCatalog) -> None:
    store = MemoryIdempotencyStore()
    store.down = True
    client = make_app(Config(), publisher=publisher, catalog=catalog,
                      idempotency=store).test_client()
    resp = add_with_key(client, "1", "k-6")
    assert_error(resp, 503, "IDEMPOTENCY_UNAVAILABLE", "Idempotency-Key")
    assert "Retry-After" in resp.headers
    assert publisher.records == []
    plain = post(client, "/api/v1/add", {"customerId": "1", "itemId": "1", "qty": 1})
    assert plain.status_code == 202 and len(publisher.records) == 1


def test_event_id_is_the_same_across_processes_and_id_spellings(
    publisher: FakePublisher, catalog: FakeCatalog
) -> None:
    one = make_app(Config(), publisher=publisher, catalog=catalog).test_client()
    two = make_app(Config(), publisher=FakePublisher(), catalog=catalog).test_client()
    a = add_with_key(one, "123", "retry-me").get_json()["eventId"]
    b = add_with_key(two, 123, "retry-me").get_json()["eventId"]
    assert a == b
    # Pinned: a changed namespace or name layout would break dedupe of in-flight retries.
    assert a == str(uuid.uuid5(uuid.UUID("6f1c2a8e-3d5b-5c47-9a0e-2b7d4c1f8e93"),
                               "123\nITEM_ADDED\nretry-me"))


def test_different_key_customer_or_command_gives_a_different_event_id(
    client: FlaskClient,
) -> None:
    # Each on a fresh record store (as once a record expired): the eventId alone keeps a
    # key reused for another customer or command from being dropped as a duplicate.
    def event_id(customer: str, key: str, path: str = "/api/v1/add") -> str:
        fresh = make_app(Config(), publisher=FakePublisher(), catalog=FakeCatalog())
        return add_with_key(fresh.test_client(), customer, key, path).get_json()["eventId"]

    base = event_id("123", "k")
    assert event_id("123", "k") == base
    assert event_id("123", "k2") != base
    assert event_id("124", "k") != base
    assert event_id("123", "k", "/api/v1/remove") != base


@pytest.mark.parametrize("key", ["", " ", "a b", "x" * 256, "ключ", "tab\tkey"])
def test_an_invalid_idempotency_key_is_400(client: FlaskClient, publisher: FakePublisher,
                                           key: str) -> None:
    assert_error(add_with_key(client, "1", key), 400, "INVALID_IDEMPOTENCY_KEY",
                 "Idempotency-Key")
    assert publisher.records == []


def test_a_255_character_idempotency_key_is_fine(client: FlaskClient) -> None:
    assert add_with_key(client, "1", "k" * 255).status_code == 202


# ---------------------------------------------------------------- catalog check


def test_add_of_an_unknown_product_is_404_when_the_catalog_is_ready(
    publisher: FakePublisher,
) -> None:
    app = make_app(Config(), publisher=publisher, catalog=FakeCatalog({"1"}))
    client = app.test_client()
    assert_error(post(client, "/api/v1/add", {"customerId": "1", "itemId": "999", "qty": 1}),
                 404, "UNKNOWN_PRODUCT", "itemId")
    assert publisher.records == []
    assert post(client, "/api/v1/add", {"customerId": "1", "itemId": "1", "qty": 1}
                ).status_code == 202


def test_without_a_catalog_view_unknown_products_are_accepted(
    client: FlaskClient, publisher: FakePublisher, catalog: FakeCatalog
) -> None:
    assert post(client, "/api/v1/add", {"customerId": "1", "itemId": "999", "qty": 1}
                ).status_code == 202
    assert catalog.asked == ["999"]


def test_only_add_consults_the_catalog(publisher: FakePublisher) -> None:
    catalog = FakeCatalog(set())
    client = make_app(Config(), publisher=publisher, catalog=catalog).test_client()
    assert post(client, "/api/v1/remove", {"customerId": "1", "itemId": "999"}
                ).status_code == 202
    assert post(client, "/api/v1/checkout", {"customerId": "1"}).status_code == 202
    assert catalog.asked == []


# ------------------------------------------------------------------------- fast path

ADD = b'{"customerId":"123","itemId":"1","qty":1}'


@pytest.mark.parametrize("method,path,body,headers", [
    ("POST", "/api/v1/add", ADD, {"Content-Type": "application/json", "Idempotency-Key": "k1"}),
    ("POST", "/api/v1/remove", b'{"customerId":"123","itemId":"1"}', {"Idempotency-Key": "k2"}),
    ("POST", "/api/v1/add", b"{not json", {"Content-Type": "application/json"}),
    ("POST", "/api/v1/add", ADD, {"Content-Type": "text/plain"}),
    ("POST", "/api/v1/add", b'{"customerId":"123","itemId":"1","qty":true}', {}),
    ("POST", "/api/v1/add", b"x" * (64 * 1024 + 1), {"Content-Type": "application/json"}),
    ("POST", "/api/v1/add?x=1", ADD, {"Idempotency-Key": "k3"}),
    ("POST", "/api/v1/add/", ADD, {}),
    ("POST", "/api/v1/nope", ADD, {}),
    ("GET", "/api/v1/add", b"", {}),
    ("PUT", "/api/v1/checkout", b'{"customerId":"1"}', {}),
])
def test_the_fast_path_answers_exactly_like_flask(method: str, path: str, body: bytes,
                                                  headers: dict[str, str]) -> None:
    from flask import Flask
    from werkzeug.test import Client

    def call(wsgi: Any) -> Any:
        return Client(wsgi).open(path, method=method, data=body, headers=headers)

    fast_publisher, flask_publisher = FakePublisher(), FakePublisher()
    fast = call(make_app(Config(), publisher=fast_publisher, catalog=FakeCatalog({"1"})))
    flask_only = make_app(Config(), publisher=flask_publisher, catalog=FakeCatalog({"1"}))
    plain = call(Flask.wsgi_app.__get__(flask_only))
    assert (fast.status_code, fast.data) == (plain.status_code, plain.data)
    assert sorted(fast.headers.items()) == sorted(plain.headers.items())
    assert [r[:2] for r in fast_publisher.records] == [r[:2] for r in flask_publisher.records]


# ---------------------------------------------------------------------------------- If-Match


@pytest.mark.parametrize("path,body", [
    ("/api/v1/add", {"customerId": "123", "itemId": "1", "qty": 1}),
    ("/api/v1/remove", {"customerId": "123", "itemId": "1"}),
    ("/api/v1/checkout", {"customerId": "123"}),
    ("/api/v1/clear", {"customerId": "123"}),
])
def test_if_match_travels_in_the_event_as_expected_version(
        client: FlaskClient, publisher: FakePublisher, path: str, body: dict) -> None:
    assert post(client, path, body, headers={"If-Match": '"7"'}).status_code == 202
    assert post(client, path, body).status_code == 202
    with_header, without = (decode_cart_event(v) for _, _, v in publisher.records)
    assert (with_header.expected_version, without.expected_version) == (7, None)
    assert "expectedVersion" not in orjson.loads(publisher.records[1][2])


@pytest.mark.parametrize("value", ['7', 'W/"7"', '"07"', '"-1"', '"7", "8"', "*", '""',
                                   '"1e3"', '"7', '"' + "9" * 19 + '"'])
def test_a_malformed_if_match_is_400_and_writes_nothing(
        client: FlaskClient, publisher: FakePublisher, value: str) -> None:
    resp = post(client, "/api/v1/checkout", {"customerId": "123"}, headers={"If-Match": value})
    assert_error(resp, 400, "INVALID_IF_MATCH", "If-Match")
    assert publisher.records == []


def test_if_match_is_part_of_the_idempotency_fingerprint(
        client: FlaskClient, publisher: FakePublisher) -> None:
    body = {"customerId": "123"}
    first = post(client, "/api/v1/checkout", body, headers={"Idempotency-Key": "k-if",
                                                            "If-Match": '"3"'})
    again = post(client, "/api/v1/checkout", body, headers={"Idempotency-Key": "k-if",
                                                            "If-Match": '"3"'})
    assert first.status_code == again.status_code == 202 and again.data == first.data
    other = post(client, "/api/v1/checkout", body, headers={"Idempotency-Key": "k-if",
                                                            "If-Match": '"4"'})
    assert_error(other, 422, "IDEMPOTENCY_KEY_REUSED", "Idempotency-Key")
    none = post(client, "/api/v1/checkout", body, headers={"Idempotency-Key": "k-if"})
    assert_error(none, 422, "IDEMPOTENCY_KEY_REUSED", "Idempotency-Key")
    assert len(publisher.records) == 1
