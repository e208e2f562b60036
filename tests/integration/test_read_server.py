"""`cartstream serve read` under granian (production config) against the real Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import redis
import requests

from cart_contract import CartDetails, EventPosition, LineItem, encode_cart_details
from cart_contract.layout import UPDATES_CHANNEL, cart_key

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2  # the production default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cart(customer: str, version: int, offset: int) -> CartDetails:
    line = LineItem("1", "IPhone 12", 1, Decimal("65000"), Decimal("65000"))
    return CartDetails(customer, f"{customer}:1", "OPEN", (line,), 1, Decimal("65000"), version,
                       EventPosition(f"e{version}", 0, offset), (), "2025-01-01T00:00:00.000000Z")


@pytest.fixture
def server(redis_url: str, database_url: str, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "READ_PORT": str(port), "READ_HOST": "127.0.0.1",
           "READ_WORKERS": str(WORKERS), "READ_LOG_LEVEL": "INFO",
           "REDIS_URL": redis_url, "DATABASE_URL": database_url,
           # Only a notification (or the subscription itself) may end a wait early.
           "READ_DEGRADED_POLL_MS": "60000"}
    log_path = tmp_path / "read-api.log"
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "cartstream", "serve", "read"], cwd=ROOT,
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            # Every worker up: one still importing the app when SIGTERM comes takes
            # READ_SHUTDOWN_TIMEOUT_S to be killed, and would also leave requests unserved.
            if log_path.read_text().count("Started worker-") == WORKERS:
                try:
                    if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
            assert time.monotonic() < deadline, "read API did not start:\n" + log_path.read_text()
            time.sleep(0.1)
        yield base
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_serves_a_cached_cart_like_the_seed_curl(server: str, redis_url: str,
                                                 unique: str) -> None:
    r = redis.Redis.from_url(redis_url)
    cid = f"s-{unique}"
    doc = encode_cart_details(cart(cid, 1, 10))
    r.hset(cart_key(cid), mapping={"v": 1, "doc": doc})
    resp = requests.get(f"{server}/api/v1/{cid}", timeout=5)
    assert resp.status_code == 200 and resp.content == doc
    assert resp.headers["Content-Type"] == "application/json"
    assert requests.get(f"{server}/openapi.json", timeout=5).json()["openapi"].startswith("3.1")
    missing = requests.get(f"{server}/no/such/path", timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


def test_read_your_write_across_worker_processes(server: str, redis_url: str,
                                                 unique: str) -> None:
    r = redis.Redis.from_url(redis_url)
    cid = f"s-{unique}"
    r.hset(cart_key(cid), mapping={"v": 1, "doc": encode_cart_details(cart(cid, 1, 10))})
    result: dict[str, requests.Response] = {}

    def read() -> None:
        result["resp"] = requests.get(f"{server}/api/v1/{cid}?minOffset=11&timeout=20000",
                                      timeout=30)

    t = threading.Thread(target=read)
    t.start()
    time.sleep(0.5)  # let the request register its waiter (its worker subscribes lazily)
    r.hset(cart_key(cid), mapping={"v": 2, "doc": encode_cart_details(cart(cid, 2, 11))})
    r.publish(UPDATES_CHANNEL,
              orjson.dumps({"customerId": cid, "version": 2, "partition": 0, "offset": 11}))
    t.join(30)
    assert result["resp"].status_code == 200
    assert result["resp"].json()["version"] == 2
