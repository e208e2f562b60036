"""The strict HTTP edge through a running system: what is refused, refused before Kafka."""

from __future__ import annotations

import base64
import uuid

import orjson
import pytest
import requests
from confluent_kafka import Consumer, TopicPartition

pytestmark = pytest.mark.e2e


def _log_size(system) -> int:
    consumer = Consumer(system.kafka(**{"group.id": f"e2e-edge-{uuid.uuid4().hex[:6]}"}))
    try:
        topic = system.env["TOPIC_CART_EVENTS"]
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in parts)
    finally:
        consumer.close()


@pytest.mark.parametrize(("raw", "ctype", "status", "code", "field"), [
    (b'{"customerId":"e1","customerId":"e2"}', "application/json", 400, "DUPLICATE_FIELD",
     "customerId"),
    (b'{"customerId":"e1","note":"x"}', "application/json", 400, "UNKNOWN_FIELD", "note"),
    (b'{"customerId":"e1"}', None, 415, "UNSUPPORTED_MEDIA_TYPE", None),
    (b'{"customerId":"e1"}', "application/x-www-form-urlencoded", 415,
     "UNSUPPORTED_MEDIA_TYPE", None),
    (b'{"customerId":".."}', "application/json", 400, "INVALID_ID", "customerId"),
    (b'{"customerId":"carts"}', "application/json", 400, "INVALID_ID", "customerId"),
])
def test_the_write_api_refuses_before_anything_reaches_kafka(system, raw, ctype, status, code,
                                                             field) -> None:
    before = _log_size(system)
    headers = {"Content-Type": ctype} if ctype else {}
    resp = requests.post(f"{system.write_url}/api/v1/clear", data=raw, headers=headers,
                         timeout=10)
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code and resp.json()["error"]["field"] == field
    assert _log_size(system) == before


def _cursor(*parts: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).rstrip(b"=").decode()


@pytest.mark.parametrize(("path", "params"), [
    ("/api/v1/carts", {"cursor": _cursor("c", "a\x00b")}),
    ("/api/v1/carts", {"sort": "totalPrice", "cursor": _cursor("t", "1.00\x00", "c1")}),
    ("/api/v1/products", {"cursor": _cursor("p", "1\x00")}),
    ("/api/v1/products", {"cursor": "\x00"}),
    ("/api/v1/carts", {"cursor": _cursor("c", 5)}),
])
def test_crafted_cursors_are_400_not_500(system, path: str, params: dict[str, str]) -> None:
    resp = requests.get(f"{system.read_url}{path}", params=params, timeout=10)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] in {"INVALID_CURSOR", "INVALID_PARAMETER"}
