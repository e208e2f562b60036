"""Fan-out: 1,000 event streams open while 500 cart writes/s land across their customers.

Seeds one cart per customer, starts `cartstream serve read` (READ_WORKERS default), opens one
`GET /api/v1/<customer>/events` per customer and reads each first event. Then, open-loop at
`--rate` writes/s for `--seconds`, a random customer's next version lands through the redis
sink's own write path (RedisCarts.put_docs: store + publish; one call every 10 ms with the
writes due, as the sink batches). The latency of a write is from its landing in Redis (the
sink call's return; from the call's start too) to the moment its event (`id:` = that version)
arrives on the customer's stream. (The pipeline before the sink — write API 202 to sink, Kafka
and the aggregator — is what bench/freshness.py measures; the two add up to 202 -> event.)

    .venv/bin/python bench/sse_fanout.py [--streams 1000] [--rate 500] [--seconds 20]

Writes bench/results/sse_fanout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu import tree_cpu_s  # noqa: E402
from bench.freshness import percentile  # noqa: E402
from bench.read_api import start_server, stop_server, unseed  # noqa: E402
from bench.read_waiters import cart, put_carts, raise_nofile  # noqa: E402
from cart_contract import encode_cart_details  # noqa: E402
from cart_contract.redis_carts import RedisCarts  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

STEP_S = 0.01  # how often the simulated sink stores what is due


class StreamReader:
    """One customer's SSE stream: the arrival time of each event id."""

    def __init__(self, cid: str) -> None:
        self.cid = cid
        self.arrived: dict[int, float] = {}
        self.first = asyncio.Event()

    async def run(self, host: str, port: int, stop: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"GET /api/v1/{self.cid}/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        try:
            await reader.readuntil(b"\r\n\r\n")
            buf = b""
            while not stop.is_set():
                chunk = await reader.read(65536)
                if not chunk:
                    return
                now = time.monotonic()
                buf += chunk
                # Chunked transfer framing lines do not start with "id: ": skipping them is
                # enough for these small events.
                for line in buf.split(b"\n"):
                    if line.startswith(b"id: "):
                        self.arrived.setdefault(int(line[4:]), now)
                        self.first.set()
                buf = buf[buf.rfind(b"\n") + 1:]
        finally:
            writer.close()


async def scenario(args: argparse.Namespace, port: int, r: redis.Redis, prefix: str,
                   server_pid: int) -> dict[str, Any]:
    cids = [f"{prefix}{i}" for i in range(args.streams)]
    streams = {c: StreamReader(c) for c in cids}
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run("127.0.0.1", port, stop)) for s in streams.values()]
    await asyncio.wait_for(asyncio.gather(*(s.first.wait() for s in streams.values())), 120)
    carts = RedisCarts(r)
    version = dict.fromkeys(cids, 1)
    written: list[tuple[str, int, float]] = []
    cpu0 = tree_cpu_s(server_pid)
    t_start = time.monotonic()
    n = int(args.rate * args.seconds)
    i = 0
    while i < n:
        # Open loop, as the sink does: every STEP_S one call stores the writes due by then
        # (one call per write capped the generator at ~315 writes/s on this box).
        await asyncio.sleep(max(0.0, t_start + i / args.rate - time.monotonic()))
        due = min(n, max(i + 1, int((time.monotonic() - t_start) * args.rate) + 1))
        batch = []
        for _ in range(i, due):
            cid = random.choice(cids)
            version[cid] += 1
            c = cart(cid, version[cid], 100 + version[cid])
            batch.append((c, encode_cart_details(c)))
        t0 = time.monotonic()
        await asyncio.to_thread(carts.put_docs, batch)
        t1 = time.monotonic()
        written.extend((c.customer_id, c.customer_version, t0, t1) for c, _ in batch)
        i = due
        await asyncio.sleep(max(0.0, t0 + STEP_S - time.monotonic()))
    elapsed = time.monotonic() - t_start
    await asyncio.sleep(3)  # the last events in flight
    server_cpu_s = tree_cpu_s(server_pid) - cpu0
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat, lat_call, superseded, lost = [], [], 0, 0
    for cid, v, t0, t1 in written:
        arrived = streams[cid].arrived.get(v)
        if arrived is not None:
            lat.append((arrived - t1) * 1000)
            lat_call.append((arrived - t0) * 1000)
        elif any(seen > v for seen in streams[cid].arrived):
            # Each event is the whole cart: a newer version that landed before this one was
            # read went out instead (coalesced, by design; the stream's state is never behind).
            superseded += 1
        else:
            lost += 1
    return {
        "streams": len(cids), "writes": len(written),
        "writes_per_s": round(len(written) / elapsed, 1),
        "versions_superseded": superseded,
        "versions_lost": lost,
        "write_to_event_ms": {"p50": round(percentile(lat, 50), 2),
                              "p99": round(percentile(lat, 99), 2),
                              "max": round(max(lat), 2)} if lat else None,
        "from_sink_call_start_ms": {"p50": round(percentile(lat_call, 50), 2),
                                    "p99": round(percentile(lat_call, 99), 2)} if lat else None,
        "server_cpu_ms_per_write": round(server_cpu_s * 1000 / max(1, len(written)), 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--server-root", type=Path, default=None,
                   help="serve the read API from another checkout (a before/after)")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sse_fanout.json")
    args = p.parse_args()
    raise_nofile()
    r = redis.Redis.from_url(args.redis_url)
    prefix = f"fan-{uuid.uuid4().hex[:8]}-"
    put_carts(r, prefix, args.streams, 101)
    port = free_port()
    load_before = os.getloadavg()[0]
    proc = start_server(port, {"REDIS_URL": args.redis_url}, root=args.server_root or ROOT)
    try:
        result = asyncio.run(scenario(args, port, r, prefix, proc.pid))
    finally:
        stop_server(proc)
        unseed(r, prefix)
    report = {
        "benchmark": "SSE fan-out: streams open while cart writes land across their customers",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": round(load_before, 2),
                    "loadavg_after": round(os.getloadavg()[0], 2)},
        "server": {"workers": int(os.environ.get("READ_WORKERS", 2)), "interface": "asgi",
                   "root": str(args.server_root or ROOT)},
        "result": result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
