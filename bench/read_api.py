"""Read API throughput and latency on cached carts, under the production granian config, in the
dev and the secure profile side by side.

Seeds N carts in Redis (store layout: HASH cart:{customerId} with v and doc), starts one
`cartstream serve read` per profile on free ports (READ_WORKERS default: 2 ASGI processes),
and drives them with wrk over random customer ids (Lua script; in the secure profile each
request carries its customer's own bearer token), or with a Python client when wrk is missing;
/healthz is the ceiling. The profiles are measured in alternating rounds (dev, secure, dev,
secure, ...) so a neighbour's load on this shared machine hits both alike, and the report gives
reads/s, p99 and the server's CPU per read for each, and secure/dev ratios against the target
(secure reads/s >= SECURE_MIN_RATIO x dev: token checks may cost at most 15%).

Before measuring, every server is warmed with passes over all customers in order, so each
worker has verified (and cached) nearly every token: a client keeps its token for an hour, so
the steady state is the cached one. `--baseline-root DIR` adds a third server, the secure
profile run from another checkout (e.g. `git archive` of an older commit), measured in the same
rounds: a before/after of a change on the same machine at the same time.
Writes bench/results/read_api.json.

    .venv/bin/python bench/read_api.py [--carts 10000] [--duration 10] [--connections 16]
        [--profiles dev,secure] [--rounds 2] [--baseline-root DIR]
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
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
from cart_contract import (  # noqa: E402 - after the path tweak, so the bench runs as a script
    CartDetails,
    EventPosition,
    LineItem,
    encode_cart_details,
)
from cart_contract.layout import cart_key  # noqa: E402
from cart_web.auth import issue_token  # noqa: E402
from cart_web.settings import AuthSettings  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

TARGET_RPS = 6_000
TARGET_P99_MS = 20.0
# Token verification (cached per process) may cost at most 15% of the read throughput.
SECURE_MIN_RATIO = 0.85
BENCH_JWT_SECRET = "bench-only-secret-" + uuid.uuid4().hex
PROFILES = ("dev", "secure")
# Result names, as bench/report.py reads them.
DEV, SECURE, BASELINE = "cached_cart", "cached_cart_secure", "cached_cart_secure_baseline"

# Every request is formatted once, at init, so the client spends the same (little) CPU per
# request with and without a token: wrk shares the 2 cores with the servers here, and a
# header table built per request would be charged to the secure profile.
CART_REQUESTS = """
local prefix = "%(prefix)s"
local n = %(n)d
local tokens = {%(tokens)s}
local reqs = {}
local sent = 0
init = function(args)
  math.randomseed(%(seed)d)
  for i = 0, n - 1 do
    local headers = nil
    if #tokens > 0 then headers = {Authorization = "Bearer " .. tokens[i + 1]} end
    reqs[i + 1] = wrk.format("GET", "/api/v1/" .. prefix .. i, headers)
  end
end
request = function()
  if %(in_order)s then
    sent = sent + 1
    return reqs[(%(start)d + sent - 1) %% n + 1]
  end
  return reqs[math.random(1, n)]
end
"""
HEALTHZ_REQUEST = """
request = function()
  return wrk.format("GET", "/healthz")
end
"""
DONE_HOOK = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d "
    .. "connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def seed(r: redis.Redis, prefix: str, n: int) -> None:
    """N realistic carts (3 lines each) in the store layout."""
    lines = tuple(
        LineItem(str(i), f"Product {i}", i, Decimal("649.99"), Decimal("649.99") * i)
        for i in (1, 2, 3)
    )
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        cid = f"{prefix}{i}"
        doc = encode_cart_details(CartDetails(
            cid, f"{cid}:1", "OPEN", lines, 6, Decimal("3899.94"), 7,
            EventPosition(str(uuid.uuid4()), i % 6, 1000 + i), (), "2025-01-01T00:00:00.000000Z"))
        pipe.hset(cart_key(cid), mapping={"v": 7, "doc": doc})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def unseed(r: redis.Redis, prefix: str) -> None:
    keys = list(r.scan_iter(match=cart_key(f"{prefix}*"), count=1000))
    for i in range(0, len(keys), 1000):
        r.delete(*keys[i:i + 1000])


def start_server(port: int, env_extra: dict[str, str],
                 root: Path = ROOT) -> subprocess.Popen[bytes]:
    """`cartstream serve read` from the checkout at `root` (this one by default)."""
    env = {**os.environ, "READ_HOST": "127.0.0.1", "READ_PORT": str(port),
           "READ_LOG_LEVEL": "WARNING", **env_extra}
    if root != ROOT:  # the other checkout's packages before the editable install's
        env["PYTHONPATH"] = str(root)
    proc = subprocess.Popen([sys.executable, "-m", "cartstream", "serve", "read"], cwd=root,
                            env=env, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the read API exited at start")
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return proc
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the read API did not start within 30 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_wrk(url: str, script: str, args: argparse.Namespace) -> dict[str, Any]:
    """One wrk run; the Lua done() hook prints the numbers. Also wrk's own CPU per request."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        cmd = ["wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{args.duration}s",
               "--timeout", "5s", "-s", f.name, url]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate()
        # wait4 already happened inside communicate(); the children's rusage has wrk in it.
    finally:
        os.unlink(f.name)
    if proc.returncode:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{err}")
    m = re.search(r"RESULT (.*)", out)
    if not m:
        raise SystemExit(f"unexpected wrk output:\n{out}")
    v = {k: int(x) for k, x in (kv.split("=") for kv in m.group(1).split())}
    errors = {k: v[k] for k in ("connect", "read", "write", "status", "timeout")}
    return {
        "requests": v["requests"],
        "requests_per_s": round(v["requests"] / (v["duration_us"] / 1e6), 1),
        "p50_ms": v["p50_us"] / 1000,
        "p90_ms": v["p90_us"] / 1000,
        "p99_ms": v["p99_us"] / 1000,
        "max_ms": v["max_us"] / 1000,
        "errors": errors,
        "client": f"wrk -t{args.wrk_threads} -c{args.connections}",
    }


def children_cpu_s() -> float:
    """CPU seconds of this process's waited-for children (wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_python(port: int, paths: list[str], args: argparse.Namespace,
               headers: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
    """Fallback client: keep-alive connections, one thread each (slower than wrk)."""
    stop = time.monotonic() + args.duration
    latencies: list[list[float]] = []
    errors = [0]

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        mine: list[float] = []
        latencies.append(mine)
        while time.monotonic() < stop:
            t0 = time.perf_counter()
            path = random.choice(paths)
            conn.request("GET", path, headers=(headers or {}).get(path, {}))
            resp = conn.getresponse()
            resp.read()
            mine.append(time.perf_counter() - t0)
            if resp.status != 200:
                errors[0] += 1
        conn.close()

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    lat = sorted(x for mine in latencies for x in mine)

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(len(lat) * p))] * 1000, 3)

    return {"requests": len(lat), "requests_per_s": round(len(lat) / elapsed, 1),
            "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "max_ms": pct(1.0),
            "errors": {"status": errors[0]}, "client": f"python x{args.connections}"}


def redis_pid(url: str) -> int | None:
    """The Redis server's process when it runs on this machine (its CPU per read is measured
    too: bench/capacity.py sizes Redis with it); None otherwise."""
    client = redis.Redis.from_url(url)
    try:
        pid = int(client.info("server")["process_id"])
    except redis.RedisError:
        return None
    finally:
        client.close()
    return pid if os.path.exists(f"/proc/{pid}") else None


class Variant:
    """One server measured in the rounds: a profile, from a checkout, with its wrk script."""

    def __init__(self, name: str, profile: str, root: Path, prefix: str, carts: int,
                 tokens: list[str]) -> None:
        self.name, self.profile, self.root = name, profile, root
        self.paths = [f"/api/v1/{prefix}{i}" for i in range(carts)]
        secure = profile == "secure"
        self.headers = ({p: {"Authorization": f"Bearer {t}"}
                         for p, t in zip(self.paths, tokens, strict=True)} if secure else None)
        quoted = ",".join(f'"{t}"' for t in tokens) if secure else ""
        self._lua = {"prefix": prefix, "n": carts, "seed": 42, "tokens": quoted}
        self.env = ({"CARTSTREAM_PROFILE": "secure", "JWT_SECRET": BENCH_JWT_SECRET}
                    if secure else {"CARTSTREAM_PROFILE": "dev"})
        self.sample_headers = {"Authorization": f"Bearer {tokens[0]}"} if secure else {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.rounds: list[dict[str, Any]] = []

    def script(self, *, in_order: bool = False, start: int = 0) -> str:
        """wrk's script: random customers, or (warm-up) every customer in order from `start`."""
        return CART_REQUESTS % {**self._lua, "in_order": "true" if in_order else "false",
                                "start": start} + DONE_HOOK


def warm(v: Variant, use_wrk: bool, args: argparse.Namespace) -> int:
    """Requests over every customer in order until each was asked `--warm-passes` times, so
    each worker (a connection's requests all go to one) has seen nearly every token."""
    base = f"http://127.0.0.1:{v.port}"
    target = args.warm_passes * args.carts
    if not use_wrk:  # the Python client is too slow for passes over 10,000 customers
        run_python(v.port, v.paths, argparse.Namespace(**{**vars(args), "duration": 5}),
                   v.headers)
        return 0
    done, rate = 0, 2000.0
    while done < target:
        # In chunks, so a slow (cold-cache) start does not stretch one long run.
        seconds = max(2, min(30, round((target - done) / rate)))
        r = run_wrk(base, v.script(in_order=True, start=done),
                    argparse.Namespace(**{**vars(args), "duration": seconds}))
        done += r["requests"]
        rate = max(r["requests_per_s"], 200.0)
    return done


def measure(v: Variant, name: str, script: str, paths: list[str],
            headers: dict[str, dict[str, str]] | None, use_wrk: bool,
            args: argparse.Namespace) -> dict[str, Any]:
    """One measured run against v's server: the client's numbers, the server's and wrk's CPU
    per request (comparable across runs on a busy machine, unlike wall-clock rates)."""
    assert v.proc is not None
    store = redis_pid(args.redis_url)
    cpu0, client0, store0 = tree_cpu_s(v.proc.pid), children_cpu_s(), store and tree_cpu_s(store)
    if use_wrk:
        result = run_wrk(f"http://127.0.0.1:{v.port}", script, args)
    else:
        result = run_python(v.port, paths, args, headers)
    n = max(1, result["requests"])
    result["server_cpu_ms_per_request"] = round((tree_cpu_s(v.proc.pid) - cpu0) * 1000 / n, 4)
    # Redis's CPU per read (a shared Redis also counts its other clients: an upper bound).
    result["redis_cpu_ms_per_request"] = None if not store else round(
        (tree_cpu_s(store) - store0) * 1000 / n, 4)
    if use_wrk:
        result["client_cpu_ms_per_request"] = round((children_cpu_s() - client0) * 1000 / n, 4)
    print(f"{name}: {result}", flush=True)
    return result


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one measurement as one: throughput and CPU over all, the worst latencies."""
    requests_ = sum(r["requests"] for r in runs)
    duration = sum(r["requests"] / r["requests_per_s"] for r in runs)
    cpu_ms = sum(r["server_cpu_ms_per_request"] * r["requests"] for r in runs)
    out = {**runs[-1], "requests": requests_, "requests_per_s": round(requests_ / duration, 1),
           "server_cpu_ms_per_request": round(cpu_ms / requests_, 4), "rounds": len(runs),
           "redis_cpu_ms_per_request": min((r["redis_cpu_ms_per_request"] for r in runs
                                            if r.get("redis_cpu_ms_per_request") is not None),
                                           default=None),
           "round_requests_per_s": [r["requests_per_s"] for r in runs],
           "round_server_cpu_ms_per_request": [r["server_cpu_ms_per_request"] for r in runs]}
    if all("client_cpu_ms_per_request" in r for r in runs):
        out["client_cpu_ms_per_request"] = round(
            sum(r["client_cpu_ms_per_request"] * r["requests"] for r in runs) / requests_, 4)
    for key in ("p50_ms", "p90_ms", "p99_ms", "max_ms"):
        out[key] = max(r[key] for r in runs)
    out["errors"] = {k: sum(r["errors"].get(k, 0) for r in runs) for k in runs[0]["errors"]}
    return out


def versus(secure: dict[str, Any], dev: dict[str, Any]) -> dict[str, Any]:
    """Secure over dev: reads/s, p99 and CPU per read, and the throughput target."""
    ratio = round(secure["requests_per_s"] / dev["requests_per_s"], 3)
    # Per-round ratios: the spread says how much the machine's noise moved the total; their
    # median (each round's pair measured back to back) is what the target is checked on, as a
    # neighbour's burst during one run moves the overall ratio a lot on this shared machine.
    paired = [round(a / b, 3) for a, b in zip(secure.get("round_requests_per_s", []),
                                              dev.get("round_requests_per_s", []), strict=False)]
    median = round(statistics.median(paired), 3) if paired else ratio
    return {
        "reads_per_s_ratio": ratio,
        "median_round_reads_per_s_ratio": median,
        "p99_ratio": round(secure["p99_ms"] / dev["p99_ms"], 3) if dev["p99_ms"] else None,
        "server_cpu_per_read_ratio": round(secure["server_cpu_ms_per_request"]
                                           / dev["server_cpu_ms_per_request"], 3),
        "round_reads_per_s_ratios": paired,
        "target_min_ratio": SECURE_MIN_RATIO,
        "met": median >= SECURE_MIN_RATIO,
    }


def main() -> None:
    """Seed, serve (each profile), warm, measure in alternating rounds, write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--carts", type=int, default=10_000)
    p.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    p.add_argument("--profiles", default="dev,secure",
                   help="profiles to measure, in this order in each round (dev, secure)")
    p.add_argument("--rounds", type=int, default=3,
                   help="alternating rounds: each profile measured once per round")
    p.add_argument("--warm-passes", type=int, default=8,
                   help="warm-up: requests per customer, in order, before measuring")
    p.add_argument("--baseline-root", type=Path,
                   help="also measure the secure profile served from this checkout")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "read_api.json")
    p.add_argument("--python-client", action="store_true", help="do not use wrk")
    args = p.parse_args()
    profiles = [x.strip() for x in args.profiles.split(",") if x.strip()]
    if not profiles or any(x not in PROFILES for x in profiles):
        p.error(f"--profiles: a comma-separated subset of {','.join(PROFILES)}")

    use_wrk = shutil.which("wrk") is not None and not args.python_client
    load_before = os.getloadavg()
    r = redis.Redis.from_url(args.redis_url)
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    seed(r, prefix, args.carts)
    settings = AuthSettings(profile="secure", jwt_secret=BENCH_JWT_SECRET)
    tokens = [issue_token(settings, f"{prefix}{i}", ttl_s=3600) for i in range(args.carts)]
    variants = [Variant(DEV if x == "dev" else SECURE, x, ROOT, prefix, args.carts, tokens)
                for x in profiles]
    if args.baseline_root is not None:
        variants.append(Variant(BASELINE, "secure", args.baseline_root.resolve(), prefix,
                                args.carts, tokens))
    results: dict[str, Any] = {}
    try:
        # Every server at once (an idle one costs nothing), so the rounds can alternate.
        for v in variants:
            v.port = free_port()
            v.proc = start_server(v.port, {"REDIS_URL": args.redis_url, **v.env}, v.root)
            sample = requests.get(f"http://127.0.0.1:{v.port}/api/v1/{prefix}0", timeout=5,
                                  headers=v.sample_headers)
            assert sample.status_code == 200 and sample.json()["customerId"] == f"{prefix}0"
        for v in variants:
            print(f"warm-up {v.name}: {warm(v, use_wrk, args)} requests in order", flush=True)
        results["healthz_ceiling"] = measure(variants[0], "healthz_ceiling",
                                             HEALTHZ_REQUEST + DONE_HOOK, ["/healthz"], None,
                                             use_wrk, args)
        for _ in range(args.rounds):
            for v in variants:
                v.rounds.append(measure(v, v.name, v.script(), v.paths, v.headers, use_wrk,
                                        args))
        for v in variants:
            results[v.name] = combine(v.rounds)
    finally:
        for v in variants:
            if v.proc is not None:
                stop_server(v.proc)
        unseed(r, prefix)
    if DEV in results:
        for name, key in ((SECURE, "secure_vs_dev"), (BASELINE, "secure_baseline_vs_dev")):
            if name in results:
                results[key] = versus(results[name], results[DEV])
                print(f"{key}: {results[key]}", flush=True)

    cart = results.get(DEV) or results[variants[0].name]
    report = {
        "benchmark": "read API, GET /api/v1/<customerId> on carts cached in Redis",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    # Shared with other work: the 1-min load average says how busy it was.
                    "loadavg_before": round(load_before[0], 2),
                    "loadavg_after": round(os.getloadavg()[0], 2)},
        "server": {"granian_workers": int(os.environ.get("READ_WORKERS", 2)),
                   "switch_interval_us": int(os.environ.get("READ_SWITCH_INTERVAL_US", 500)),
                   "interface": "asgi", "same_machine_as_client": True},
        "load": {"carts": args.carts, "duration_s": args.duration, "rounds": args.rounds,
                 "profiles": profiles, "warm_passes": args.warm_passes,
                 "baseline_root": None if args.baseline_root is None
                 else str(args.baseline_root),
                 "connections": args.connections, "client": cart["client"]},
        "results": results,
        "targets": {"requests_per_s": TARGET_RPS, "p99_ms": TARGET_P99_MS,
                    "secure_reads_per_s_ratio": SECURE_MIN_RATIO},
        "met": cart["requests_per_s"] >= TARGET_RPS and cart["p99_ms"] <= TARGET_P99_MS
        and not any(cart["errors"].values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {args.out}: met={report['met']}")


if __name__ == "__main__":
    main()
