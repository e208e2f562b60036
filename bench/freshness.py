"""Freshness: time from the write API's 202 to the read API answering with that offset.

    python bench/freshness.py [--rate 500] [--seconds 20] [--sample-every 5]
                              (against a running `make up`)

Writes at a steady rate (adds for random customers of the sample catalog). After the 202 of
every `sample-every`-th write, a reader asks `GET /api/v1/<customer>?minOffset=<offset>`; the
time from the 202 to its answer is the freshness of that write. Sampling keeps the number of
read-your-write waits in flight within the read API's bounded waiter pool (READ_MAX_WAITERS per
worker) while the pipeline carries the full write rate. Reports p50/p99 freshness, the write
latency, and writes bench/results/freshness.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of the values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=500, help="writes per second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--sample-every", type=int, default=5,
                        help="measure the freshness of one write in this many")
    parser.add_argument("--write-url", default=os.environ.get("WRITE_URL",
                                                              "http://127.0.0.1:8080"))
    parser.add_argument("--read-url", default=os.environ.get("READ_URL", "http://127.0.0.1:7000"))
    args = parser.parse_args()
    local = threading.local()
    lags: list[float] = []
    write_ms: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def session() -> requests.Session:
        if not hasattr(local, "s"):
            local.s = requests.Session()
        return local.s

    def one(customer: str, sample: bool) -> None:
        s = session()
        sent = time.monotonic()
        r = s.post(f"{args.write_url}/api/v1/add", timeout=10,
                   json={"customerId": customer, "itemId": str(random.randint(1, 30)), "qty": 1})
        acked = time.monotonic()
        with lock:
            write_ms.append((acked - sent) * 1000)
        if r.status_code != 202:
            with lock:
                errors.append(f"write {r.status_code}")
            return
        if sample:
            readers.submit(wait_for, customer, r.json()["offset"], acked)

    def wait_for(customer: str, offset: int, acked: float) -> None:
        g = session().get(f"{args.read_url}/api/v1/{customer}",
                          params={"minOffset": offset, "timeout": 5000}, timeout=10)
        with lock:
            if g.status_code == 200:
                lags.append(time.monotonic() - acked)
            else:
                errors.append(f"read {g.status_code}")

    total = int(args.rate * args.seconds)
    start = time.monotonic()
    readers = ThreadPoolExecutor(max_workers=32)
    with ThreadPoolExecutor(max_workers=64) as pool:
        for i in range(total):
            # A steady schedule: request i goes out at start + i / rate.
            delay = start + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, f"fresh-{random.randrange(5000)}", i % args.sample_every == 0)
    elapsed = time.monotonic() - start
    readers.shutdown(wait=True)
    kinds: dict[str, int] = {}
    for e in errors:
        kinds[e] = kinds.get(e, 0) + 1
    result = {
        "writes": total, "achieved_rate": round(total / elapsed), "errors": kinds,
        "samples": len(lags), "sample_every": args.sample_every,
        "write_ms": {"p50": round(percentile(write_ms, 50), 1),
                     "p99": round(percentile(write_ms, 99), 1)} if write_ms else None,
        "freshness_ms": {"p50": round(percentile(lags, 50) * 1000, 1),
                         "p99": round(percentile(lags, 99) * 1000, 1)} if lags else None,
        "target_p99_ms": 500,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "freshness.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
