"""5,000 read-your-write waiters in one read-API process, released together.

Seeds N carts in Redis, starts `cartstream serve read` with READ_WORKERS=1 (one process holds
them all), opens N concurrent `GET /api/v1/<customer>?minOffset=0:<next>&timeout=...` (one
customer each, so N distinct waits) and waits until /metrics shows all N open. Meanwhile a few
keep-alive connections read cached carts without minOffset: their p99 is the "plain reads keep
flowing" figure. Then the paused pipeline "resumes": the next version of every cart lands
through the redis sink's own write path (cart_contract.redis_carts.RedisCarts.put_docs: the
version-guarded script that stores each cart and publishes its notification, 500 carts per
call as the sink chunks them). Each waiter's wake latency is the time from its write landing in
Redis (the return of the sink call that stored it; from the call's start too, a bound that adds
the call itself) to its 200. (The Kafka aggregator is not in this loop: what it adds is the time
before the sink call, measured by bench/freshness.py.)

`--rate 0` (default) lands all N writes back to back, as a paused sink resuming does; `--rate R`
lands them at R carts/s in sink calls every 10 ms, the steady state of a sink keeping up.
The bench client itself (N sockets, asyncio) runs on the same machine: its CPU during the
release is reported next to the server's.

    .venv/bin/python bench/read_waiters.py [--waiters 5000] [--readers 8]

The client holds N sockets: the soft RLIMIT_NOFILE is raised to the hard limit here (the
server, a child, inherits it). A read API serving this many waits needs the same (`ulimit -n`).
Writes bench/results/read_waiters.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import resource
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu import tree_cpu_s  # noqa: E402
from bench.freshness import build_request, parse_head, percentile  # noqa: E402
from bench.read_api import free_port, start_server, stop_server, unseed  # noqa: E402
from cart_contract import CartDetails, EventPosition, LineItem, encode_cart_details  # noqa: E402
from cart_contract.layout import cart_key  # noqa: E402
from cart_contract.redis_carts import RedisCarts  # noqa: E402

TARGET_P99_WAKE_MS = 100.0
TARGET_P99_PLAIN_MS = 50.0
SINK_CHUNK = 500


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cart(cid: str, version: int, offset: int) -> CartDetails:
    line = LineItem("1", "Product 1", 1, Decimal("649.99"), Decimal("649.99"))
    return CartDetails(cid, f"{cid}:1", "OPEN", (line,), 1, Decimal("649.99"), version,
                       EventPosition(f"e-{cid}-{version}", 0, offset), (),
                       "2025-01-01T00:00:00.000000Z")


def put_carts(r: redis.Redis, prefix: str, n: int, offset: int) -> None:
    """Customers prefix0 .. prefix{n-1}, each with a one-line cart at version 1 in the store."""
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        c = cart(f"{prefix}{i}", 1, offset)
        pipe.hset(cart_key(c.customer_id), mapping={"v": 1, "doc": encode_cart_details(c)})
    pipe.execute()


def metric(base: str, name: str) -> float:
    total = 0.0
    for line in requests.get(f"{base}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def get(host: str, port: int, path: str, timeout_s: float) -> tuple[int, float]:
    """One request on its own connection: (status, monotonic time of the full answer)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        async with asyncio.timeout(timeout_s):
            writer.write(build_request("GET", host, port, path))
            head = parse_head(await reader.readuntil(b"\r\n\r\n"))
            await reader.readexactly(head.content_length or 0)
            return head.status, time.monotonic()
    finally:
        writer.close()


async def plain_reader(host: str, port: int, paths: list[str], stop: asyncio.Event,
                       out: list[tuple[float, float]]) -> None:
    """Keep-alive cached-cart reads until stop: (start, latency) each."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            writer.write(build_request("GET", host, port, random.choice(paths)))
            head = parse_head(await reader.readuntil(b"\r\n\r\n"))
            await reader.readexactly(head.content_length or 0)
            assert head.status == 200, head.status
            out.append((t0, time.monotonic() - t0))
    finally:
        writer.close()


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 2),
            "p99_ms": round(percentile(ms, 99), 2), "max_ms": round(max(ms), 2)} if ms else {}


async def scenario(args: argparse.Namespace, base: str, r: redis.Redis, prefix: str,
                   server_pid: int) -> dict[str, Any]:
    host, port = "127.0.0.1", int(base.rsplit(":", 1)[1])
    cids = [f"{prefix}{i}" for i in range(args.waiters)]
    plain_paths = [f"/api/v1/{c}" for c in cids]
    stop = asyncio.Event()
    plain: list[tuple[float, float]] = []
    readers = [asyncio.create_task(plain_reader(host, port, plain_paths, stop, plain))
               for _ in range(args.readers)]
    t_open = time.monotonic()
    sem = asyncio.Semaphore(500)  # connect in waves: the listen backlog is finite

    async def wait(cid: str) -> tuple[int, float]:
        async with sem:
            task = asyncio.create_task(get(host, port, f"/api/v1/{cid}?minOffset=0:101"
                                           f"&timeout={args.timeout_ms}", 120))
            await asyncio.sleep(0.001)
        return await task

    waits = [asyncio.create_task(wait(c)) for c in cids]
    deadline = time.monotonic() + 120
    gauge = "cartstream_read_waiters_open"
    while (held := await asyncio.to_thread(metric, base, gauge)) < len(cids):
        if time.monotonic() > deadline:
            raise SystemExit(f"only {held} of {len(cids)} waiters registered")
        await asyncio.sleep(0.5)
    t_held = time.monotonic()
    await asyncio.sleep(args.hold_s)  # plain reads measured while all the waits are held
    # "Resume": the sink stores the next version of every cart, notifying as it goes.
    carts = RedisCarts(r)
    docs = [(c, encode_cart_details(c)) for c in (cart(cid, 2, 101) for cid in cids)]
    called: dict[str, float] = {}
    landed: dict[str, float] = {}
    step_s = 0.01
    chunk_n = SINK_CHUNK if args.rate <= 0 else max(1, min(SINK_CHUNK, round(args.rate * step_s)))
    cpu0, client_cpu0 = tree_cpu_s(server_pid), time.process_time()
    t_release = time.monotonic()
    for start in range(0, len(docs), chunk_n):
        if args.rate > 0:
            # Open loop: the chunk starting at cart i is due at i / rate, whatever the answers do.
            await asyncio.sleep(max(0.0, t_release + start / args.rate - time.monotonic()))
        chunk = docs[start:start + chunk_n]
        t0 = time.monotonic()
        await asyncio.to_thread(carts.put_docs, chunk)
        t1 = time.monotonic()
        for c, _ in chunk:
            called[c.customer_id], landed[c.customer_id] = t0, t1
    t_written = time.monotonic()
    results = await asyncio.gather(*waits)
    t_done = time.monotonic()
    server_cpu_s = tree_cpu_s(server_pid) - cpu0
    client_cpu_s = time.process_time() - client_cpu0
    stop.set()
    await asyncio.gather(*readers)
    statuses: dict[str, int] = {}
    for status, _ in results:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = [(cid, t) for cid, (status, t) in zip(cids, results, strict=True) if status == 200]
    wake = [t - landed[cid] for cid, t in ok]
    wake_from_call = [t - called[cid] for cid, t in ok]
    return {
        "waiters": len(cids),
        "statuses": statuses,
        "all_200": statuses == {"200": len(cids)},
        "seconds_to_hold_all": round(t_held - t_open, 2),
        "rate_per_s": args.rate or "all at once",
        "sink_calls_of": chunk_n,
        "seconds_to_write_all": round(t_written - t_release, 3),
        "wake_latency": summary(wake),
        "wake_latency_from_sink_call_start": summary(wake_from_call),
        "release_to_last_answer_s": round(t_done - t_release, 3),
        "server_cpu_s_during_release": round(server_cpu_s, 3),
        "server_cpu_ms_per_wait": round(server_cpu_s * 1000 / max(1, len(ok)), 3),
        "client_cpu_s_during_release": round(client_cpu_s, 3),
        "plain_reads_while_held": summary([lat for t0, lat in plain if t_held <= t0 < t_release]),
        "plain_reads_during_release": summary([lat for t0, lat in plain if t0 >= t_release]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--waiters", type=int, default=5000)
    p.add_argument("--readers", type=int, default=8, help="plain-read connections")
    p.add_argument("--hold-s", type=float, default=5.0)
    p.add_argument("--timeout-ms", type=int, default=30_000)
    p.add_argument("--server-root", type=Path, default=None,
                   help="serve the read API from another checkout (a before/after)")
    p.add_argument("--rate", type=float, default=0,
                   help="carts/s landing (0: all at once, as a resuming sink)")
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "read_waiters.json")
    args = p.parse_args()
    nofile = raise_nofile()
    if nofile < args.waiters + 1000:
        raise SystemExit(f"ulimit -n is {nofile}: too low for {args.waiters} waiters")
    r = redis.Redis.from_url(args.redis_url)
    prefix = f"wait-{uuid.uuid4().hex[:8]}-"
    put_carts(r, prefix, args.waiters, 100)
    port = free_port()
    load_before = os.getloadavg()[0]
    proc = start_server(port, {"REDIS_URL": args.redis_url, "READ_WORKERS": "1",
                               "READ_WAIT_MAX_MS": str(args.timeout_ms)},
                        root=args.server_root or ROOT)
    try:
        result = asyncio.run(scenario(args, f"http://127.0.0.1:{port}", r, prefix, proc.pid))
    finally:
        stop_server(proc)
        unseed(r, prefix)
    wake, plain = result["wake_latency"], result["plain_reads_while_held"]
    report = {
        "benchmark": "read-your-write waiters held by one read-API process, released together",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_before": round(load_before, 2),
                    "loadavg_after": round(os.getloadavg()[0], 2)},
        "server": {"workers": 1, "interface": "asgi", "nofile": nofile,
                   "root": str(args.server_root or ROOT)},
        "result": result,
        "targets": {"wake_p99_ms": TARGET_P99_WAKE_MS, "plain_p99_ms": TARGET_P99_PLAIN_MS},
        "met": bool(result["all_200"] and wake and wake["p99_ms"] <= TARGET_P99_WAKE_MS
                    and plain and plain["p99_ms"] <= TARGET_P99_PLAIN_MS),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
