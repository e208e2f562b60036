"""`cartstream serve read` under granian (production config) against the real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import redis
import requests

from cart_contract import CartDetails, EventPosition, LineItem, encode_cart_details
from cart_contract.layout import UPDATES_CHANNEL, cart_key
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 2  # the production default


def cart(customer: str, version: int, offset: int) -> CartDetails:
    line = LineItem("1", "IPhone 12", 1, Decimal("65000"), Decimal("65000"))
    return CartDetails(customer, f"{customer}:1", "OPEN", (line,), 1, Decimal("65000"), version,
                       EventPosition(f"e{version}", 0, offset), (), "2025-01-01T00:00:00.000000Z")


@contextmanager
def serving(redis_url: str, database_url: str, tmp_path: Path,
            workers: int = WORKERS) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "READ_PORT": str(port), "READ_HOST": "127.0.0.1",
           "READ_WORKERS": str(workers), "READ_LOG_LEVEL": "INFO",
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
            if log_path.read_text().count("Started worker-") == workers:
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


@pytest.fixture
def server(redis_url: str, database_url: str, tmp_path: Path) -> Iterator[str]:
    with serving(redis_url, database_url, tmp_path) as base:
        yield base


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


# ------------------------------------------------------------------------ event streams


def _put(r: redis.Redis, cid: str, version: int, offset: int, *, notify: bool = True) -> bytes:
    doc = encode_cart_details(cart(cid, version, offset))
    r.hset(cart_key(cid), mapping={"v": version, "doc": doc})
    if notify:
        r.publish(UPDATES_CHANNEL, orjson.dumps({"customerId": cid, "version": version,
                                                 "partition": 0, "offset": offset}))
    return doc


def _events(lines: Iterator[str], n: int) -> list[tuple[str, str]]:
    """The next n events (id, data) of an SSE line iterator (comments and retry skipped)."""
    out: list[tuple[str, str]] = []
    event: dict[str, str] = {}
    for line in lines:
        if line == "" and "data" in event:
            out.append((event.get("id", ""), event["data"]))
            event = {}
            if len(out) == n:
                return out
        elif line.startswith(("id: ", "data: ")):
            key, _, value = line.partition(": ")
            event[key] = value
    raise AssertionError("the stream ended")


def test_event_stream_sends_each_version_and_resumes(server: str, redis_url: str,
                                                     unique: str) -> None:
    r = redis.Redis.from_url(redis_url)
    cid = f"s-{unique}"
    first = _put(r, cid, 1, 10, notify=False)
    url = f"{server}/api/v1/{cid}/events"
    with requests.get(url, stream=True, timeout=10) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        lines = resp.iter_lines(decode_unicode=True)
        assert next(lines) == "retry: 3000"
        assert _events(lines, 1) == [("1", first.decode())]
        second = _put(r, cid, 2, 11)
        assert _events(lines, 1) == [("2", second.decode())]
    third = _put(r, cid, 3, 12)
    with requests.get(url, stream=True, timeout=10, headers={"Last-Event-ID": "2"}) as resp:
        assert _events(resp.iter_lines(decode_unicode=True), 1) == [("3", third.decode())]


def _metric(base: str, name: str) -> float:
    total = 0.0
    for line in requests.get(f"{base}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_dropped_streams_leave_no_task_waiter_or_subscription(redis_url: str,
                                                               database_url: str,
                                                               tmp_path: Path,
                                                               unique: str) -> None:
    import asyncio

    r = redis.Redis.from_url(redis_url)
    cids = [f"d-{unique}-{i}" for i in range(50)]
    for cid in cids:
        _put(r, cid, 1, 10, notify=False)
    with serving(redis_url, database_url, tmp_path, workers=1) as base:
        port = int(base.rsplit(":", 1)[1])

        async def open_and_drop(n: int) -> int:
            async def one(i: int) -> asyncio.StreamWriter:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"GET /api/v1/{cids[i % len(cids)]}/events HTTP/1.1\r\n"
                             f"Host: 127.0.0.1\r\n\r\n".encode())
                await writer.drain()
                data = b""
                while b"id: 1" not in data:
                    chunk = await asyncio.wait_for(reader.read(65536), 30)
                    assert chunk, "the stream ended"
                    data += chunk
                return writer

            writers = await asyncio.gather(*(one(i) for i in range(n)))
            opened = _metric(base, "cartstream_read_streams_open")
            for w in writers:
                w.close()
            return int(opened)

        def settled() -> None:
            deadline = time.monotonic() + 15
            while _metric(base, "cartstream_read_streams_open") != 0:
                assert time.monotonic() < deadline
                time.sleep(0.2)

        # A first round starts what a worker keeps for good (its subscriber, pools): the
        # baseline is taken after it.
        assert asyncio.run(open_and_drop(20)) == 20
        settled()
        time.sleep(1)
        subscriptions = r.pubsub_numsub(UPDATES_CHANNEL)[0][1]
        tasks = _metric(base, "cartstream_read_event_loop_tasks")
        assert asyncio.run(open_and_drop(1000)) == 1000
        deadline = time.monotonic() + 15
        while _metric(base, "cartstream_read_streams_open") != 0 or \
                _metric(base, "cartstream_read_event_loop_tasks") > tasks:
            assert time.monotonic() < deadline, (
                _metric(base, "cartstream_read_streams_open"),
                _metric(base, "cartstream_read_event_loop_tasks"), tasks)
            time.sleep(0.2)
        # One subscription per process, whatever the streams did.
        assert r.pubsub_numsub(UPDATES_CHANNEL)[0][1] == subscriptions
