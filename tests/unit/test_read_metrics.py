"""GET /metrics: Prometheus text with requests by route and status, latency, waiters, streams."""

from __future__ import annotations

import re

import pytest

from cart_read.app import create_app
from cart_read.config import Config
from cart_read.metrics import route_of
from cart_read.waiters import CartWaiters
from tests.support.read_client import ReadClient
from tests.support.read_fakes import FakePool, FakeRedis, cart


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value in the exposition text (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if m and ",".join(sorted((m.group(1) or "").split(","))) == want:
            return float(m.group(2))
    return 0.0


@pytest.mark.parametrize("path,route", [
    ("/api/v1/123", "/api/v1/{customerId}"),
    ("/api/v1/123/orders", "/api/v1/{customerId}/orders"),
    ("/api/v1/123/events", "/api/v1/{customerId}/events"),
    ("/api/v1/123/events/ticket", "/api/v1/{customerId}/events/ticket"),
    ("/api/v1/carts", "/api/v1/carts"),
    ("/api/v1/products/7", "/api/v1/products/{productId}"),
    ("/api/v1/123/nope", "other"),
    ("/wp-admin.php", "other"),
    ("/metrics", "/metrics"),
])
def test_labels_are_route_templates_never_raw_paths(path: str, route: str) -> None:
    assert route_of(path) == route


def test_metrics_count_requests_by_route_and_status() -> None:
    r = FakeRedis()
    r.put(cart())
    client = ReadClient(create_app(Config(redis_retry_ms=0), redis=r, db_pool=FakePool([]),
                                   waiter=CartWaiters(4)))
    before = client.get("/metrics").text
    assert client.get("/api/v1/123").status_code == 200  # the fast path counts too
    assert client.get("/api/v1/999").status_code == 404
    assert client.get("/api/v1/123?minOffset=0").status_code == 200
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    after = resp.text

    def grew(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    route = "/api/v1/{customerId}"
    assert grew("cartstream_read_http_requests_total", route=route, method="GET", status="200") == 2
    assert grew("cartstream_read_http_requests_total", route=route, method="GET", status="404") == 1
    assert grew("cartstream_read_http_request_duration_seconds_count", route=route) == 3
    assert "cartstream_read_waiters_open" in after and "cartstream_read_streams_open" in after
    client.close()
