"""Benchmark the write API: acknowledged adds/s and latency under N connections, with a ceiling.

Starts the production server (`cartstream serve write`: granian, same config path) on a free port
against the shared Kafka (writing to a fresh topic unless --topic), drives it with wrk (Lua
script: POST /api/v1/add, customerId varies), then drives GET /healthz on the same server as
the ceiling of Flask + granian on this machine. The adds run in the dev and the secure profile
(each add with its customer's bearer token, verified and counted against the rate limit in
Redis), both servers up at once and measured in alternating rounds (dev, secure, dev, secure),
so the secure/dev ratios of acked adds/s and CPU per add are from the same minutes. The same add
path is then served with a no-op publisher (bench/write_nokafka.py), once acking at once and once
holding each request as long as an ack took: the API's CPU per acked add is split into HTTP,
waiting and the Kafka client (`kafka_cost` in the JSON), with the context switches per request
of each.
Prints a table and writes bench/results/write_api.json.

    .venv/bin/python -m bench.write_api                   # 64 connections, 15 s per scenario
    .venv/bin/python -m bench.write_api --connections 128 --duration 30 --workers 2 --threads 32
    .venv/bin/python -m bench.write_api --profiles dev --rounds 1   # dev only, as before

Uses `wrk` (Debian package `wrk`), else a slower Python client. The load generator shares the
machine's cores with the server and Kafka, so numbers are lower than on separate machines.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "write_api.json"
PROFILES = ("dev", "secure")
if str(ROOT) not in sys.path:  # `python bench/write_api.py` puts bench/ first, not the repo
    sys.path.insert(0, str(ROOT))

from tests.support.ports import free_port  # noqa: E402

# wrk runs this per thread; `done` prints one machine-readable line with the latency percentiles.
LUA = r"""
local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

function init(args)
  mode = args[1] or "get"
  prefix = args[2] or "bench"
  customers = tonumber(args[3] or "10000")
  item = args[4] or "1"
  n = 0
end

function request()
  if mode ~= "add" and mode ~= "addkey" then
    return wrk.format("GET", nil)
  end
  n = n + 1
  local body = string.format('{"customerId":"%s-%d-%d","itemId":"%s","qty":1}',
                             prefix, tid, n % customers, item)
  local headers = {["Content-Type"] = "application/json"}
  if mode == "addkey" then
    -- A fresh key per request: every one is recorded in Redis (reserve, then the answer).
    headers["Idempotency-Key"] = string.format("%s-%d-%d", prefix, tid, n)
  end
  if tokens then  -- the secure profile: the customer's own token (secure_tokens)
    headers["Authorization"] = "Bearer " .. tokens[tid * customers + n % customers + 1]
  end
  return wrk.format("POST", "/api/v1/add", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"non_2xx":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""


@dataclass
class Result:
    """One wrk run, reduced to what we report."""

    scenario: str
    connections: int
    duration_s: float
    requests: int
    accepted: int
    non_2xx: int
    socket_errors: int
    rps: float
    accepted_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    # CPU per request of the server's processes and of the local Kafka broker (None: not found).
    server_cpu_ms: float | None = None
    broker_cpu_ms: float | None = None
    # Context switches of the server's threads per request: its wake-ups and preemptions.
    server_ctx_switches: float | None = None


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """Wait until /readyz says Kafka is reachable (the server is up and configured)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base}/readyz not ready within {timeout_s}s")


def run_wrk(url: str, script: Path, args: list[str], connections: int, threads: int,
            duration_s: float) -> dict[str, Any]:
    """Run wrk once and return the numbers its `done` hook printed."""
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration_s:g}s",
           "--timeout", "10s", "-s", str(script), url, "--", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         timeout=duration_s + 60).stdout
    match = re.search(r"^WRKJSON (\{.*\})$", out, re.MULTILINE)
    if not match:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return json.loads(match.group(1))


def run_python(base: str, mode: str, run_id: str, customers: int, item: str,
               connections: int, duration_s: float) -> dict[str, Any]:
    """Fallback when wrk is missing: one keep-alive connection per thread (far slower).

    Returns the same fields as the wrk script's `done` hook.
    """
    host, port = base.removeprefix("http://").split(":")
    deadline = time.monotonic() + duration_s
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"non_2xx": 0, "read_errors": 0}

    def client(n: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        mine: list[float] = []
        non_2xx = errors = i = 0
        while time.monotonic() < deadline:
            i += 1
            t0 = time.perf_counter()
            try:
                if mode in ("add", "addkey"):
                    body = (f'{{"customerId":"{run_id}-{n}-{i % customers}",'
                            f'"itemId":"{item}","qty":1}}')
                    headers = {"Content-Type": "application/json"}
                    if mode == "addkey":
                        headers["Idempotency-Key"] = f"{run_id}-{n}-{i}"
                    conn.request("POST", "/api/v1/add", body=body, headers=headers)
                else:
                    conn.request("GET", "/healthz")
                resp = conn.getresponse()
                resp.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                continue
            mine.append(time.perf_counter() - t0)
            non_2xx += not 200 <= resp.status < 300
        conn.close()
        with lock:
            latencies.extend(mine)
            counts["non_2xx"] += non_2xx
            counts["read_errors"] += errors

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    lat = sorted(latencies) or [0.0]

    def pct_us(p: float) -> int:
        return int(lat[min(len(lat) - 1, int(len(lat) * p))] * 1e6)

    return {"requests": len(latencies), "duration_us": int(elapsed * 1e6), "connect_errors": 0,
            "read_errors": counts["read_errors"], "write_errors": 0, "timeouts": 0,
            "non_2xx": counts["non_2xx"], "p50_us": pct_us(0.5), "p90_us": pct_us(0.9),
            "p99_us": pct_us(0.99), "max_us": int(lat[-1] * 1e6),
            "mean_us": sum(lat) / len(lat) * 1e6}


def reduce(scenario: str, raw: dict[str, Any], connections: int) -> Result:
    """wrk's numbers as a Result (accepted = 2xx answers)."""
    seconds = raw["duration_us"] / 1e6
    socket_errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors",
                                         "timeouts"))
    accepted = raw["requests"] - raw["non_2xx"] - raw["read_errors"] - raw["timeouts"]
    return Result(
        scenario=scenario, connections=connections, duration_s=round(seconds, 2),
        requests=raw["requests"], accepted=max(accepted, 0), non_2xx=raw["non_2xx"],
        socket_errors=socket_errors, rps=round(raw["requests"] / seconds, 1),
        accepted_rps=round(max(accepted, 0) / seconds, 1),
        p50_ms=raw["p50_us"] / 1000, p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000, max_ms=raw["max_us"] / 1000,
    )


def combine(scenario: str, runs: list[Result]) -> Result:
    """Rounds of one scenario as one: rates and CPU over all of them, the worst latencies."""
    seconds = sum(r.duration_s for r in runs)
    n = sum(r.requests for r in runs) or 1

    def per_request(field: str) -> float | None:
        values = [getattr(r, field) for r in runs]
        if any(v is None for v in values):
            return None
        return round(sum(v * r.requests for v, r in zip(values, runs, strict=True)) / n, 4)

    return Result(
        scenario=scenario, connections=runs[0].connections, duration_s=round(seconds, 2),
        requests=sum(r.requests for r in runs), accepted=sum(r.accepted for r in runs),
        non_2xx=sum(r.non_2xx for r in runs), socket_errors=sum(r.socket_errors for r in runs),
        rps=round(sum(r.requests for r in runs) / seconds, 1),
        accepted_rps=round(sum(r.accepted for r in runs) / seconds, 1),
        p50_ms=max(r.p50_ms for r in runs), p90_ms=max(r.p90_ms for r in runs),
        p99_ms=max(r.p99_ms for r in runs), max_ms=max(r.max_ms for r in runs),
        server_cpu_ms=per_request("server_cpu_ms"), broker_cpu_ms=per_request("broker_cpu_ms"),
    )


def versus(secure: Result, dev: Result, secure_rounds: list[Result],
           dev_rounds: list[Result]) -> dict[str, Any]:
    """Secure over dev: acked adds/s, p99 and CPU per acked add (server + broker)."""
    def cpu(r: Result) -> float | None:
        if r.server_cpu_ms is None:
            return None
        return r.server_cpu_ms + (r.broker_cpu_ms or 0.0)

    sec_cpu, dev_cpu = cpu(secure), cpu(dev)
    paired = [round(s.accepted_rps / d.accepted_rps, 3)
              for s, d in zip(secure_rounds, dev_rounds, strict=False) if d.accepted_rps]
    return {
        "acked_adds_per_s_ratio": round(secure.accepted_rps / dev.accepted_rps, 3)
        if dev.accepted_rps else None,
        # Each round's pair ran back to back: their median resists a neighbour's burst.
        "round_acked_adds_per_s_ratios": paired,
        "median_round_acked_adds_per_s_ratio": round(statistics.median(paired), 3)
        if paired else None,
        "p99_ratio": round(secure.p99_ms / dev.p99_ms, 3) if dev.p99_ms else None,
        "cpu_per_add_ratio": round(sec_cpu / dev_cpu, 3) if sec_cpu and dev_cpu else None,
        "server_cpu_ms_per_add": {"dev": dev.server_cpu_ms, "secure": secure.server_cpu_ms},
    }


def topic_end_offsets(bootstrap: str, topic: str) -> int:
    """Sum of the topic's end offsets: how many records it holds in total."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(tps).values())
    finally:
        consumer.close()


def secure_tokens(run_id: str, customers: int, threads: int) -> tuple[str, dict[str, str]]:
    """The Lua table of every bench customer's token (thread-major, as the script indexes it)
    and the secure profile's environment that accepts them."""
    from cart_web.auth import issue_token
    from cart_web.settings import AuthSettings

    secret = f"bench-only-{uuid.uuid4().hex}"
    settings = AuthSettings(profile="secure", jwt_secret=secret)
    tokens = [issue_token(settings, f"{run_id}-{t}-{c}")
              for t in range(threads) for c in range(customers)]
    lua = "tokens = {" + ",".join(f'"{t}"' for t in tokens) + "}\n"
    # Limits far above the bench's rate: the point is what checking costs, not refusing.
    env = {"CARTSTREAM_PROFILE": "secure", "JWT_SECRET": secret,
           "RATE_LIMIT_COMMANDS": "1000000000"}
    return lua, env


def start_server(args: argparse.Namespace, port: int, log_path: Path,
                 module: str = "cartstream serve write",
                 env_extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`python -m <module>` (by default the write API exactly as production starts it), tuned by
    the bench flags."""
    env = {
        **os.environ,
        "WRITE_HOST": "127.0.0.1", "WRITE_PORT": str(port),
        "KAFKA_BOOTSTRAP": args.kafka, "TOPIC_CART_EVENTS": args.topic,
        "WRITE_LOG_LEVEL": "WARNING", **(env_extra or {}),
    }
    for flag, var in (("workers", "WRITE_WORKERS"), ("threads", "WRITE_THREADS"),
                      ("linger_ms", "WRITE_LINGER_MS"), ("batch_size", "WRITE_BATCH_SIZE")):
        value = getattr(args, flag)
        if value is not None:
            env[var] = str(value)
    if args.no_catalog_check:
        env["WRITE_CATALOG_CHECK"] = "0"
    log = log_path.open("wb")
    return subprocess.Popen([sys.executable, "-m", *module.split()], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def broker_pid() -> int | None:
    """The pid of a Kafka broker running on this machine (the local stack's), if any."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"kafka.Kafka" in cmdline:
                return int(name)
    return None


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group and wait (SIGKILL after 30 s)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(results: list[Result]) -> str:
    """A fixed-width table of the runs."""
    head = (f"{'scenario':<11} {'conns':>5} {'req/s':>9} {'accepted/s':>10} {'p50 ms':>8} "
            f"{'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'non-2xx':>8} {'sock err':>8} "
            f"{'srv CPU ms':>10} {'broker ms':>9} {'ctx sw':>6}")
    rows = [head, "-" * len(head)]
    for r in results:
        rows.append(f"{r.scenario:<11} {r.connections:>5} {r.rps:>9.0f} {r.accepted_rps:>10.0f} "
                    f"{r.p50_ms:>8.2f} {r.p90_ms:>8.2f} {r.p99_ms:>8.2f} {r.max_ms:>8.1f} "
                    f"{r.non_2xx:>8} {r.socket_errors:>8} {_ms(r.server_cpu_ms):>10} "
                    f"{_ms(r.broker_cpu_ms):>9} "
                    f"{'-' if r.server_ctx_switches is None else r.server_ctx_switches:>6}")
    return "\n".join(rows)


def kafka_cost(add: Result, nokafka: Result, waiting: Result, wait_ms: float) -> dict[str, Any]:
    """The server's CPU per acked add split into HTTP (the same handler, no Kafka), waiting (the
    same, each request parked on its thread for `wait_ms`) and the Kafka client (the rest)."""
    if None in (add.server_cpu_ms, nokafka.server_cpu_ms, waiting.server_cpu_ms):
        return {}
    http, wait, total = nokafka.server_cpu_ms, waiting.server_cpu_ms, add.server_cpu_ms
    assert http is not None and wait is not None and total is not None
    return {"http_ms": http, "waiting_ms": round(wait - http, 4),
            "kafka_client_ms": round(total - wait, 4), "kafka_part_ms": round(total - http, 4),
            "kafka_over_http": round((total - http) / http, 2) if http else None,
            "target_kafka_over_http": 0.5, "ack_wait_ms": round(wait_ms, 1),
            "ctx_switches": {"add": add.server_ctx_switches,
                             "add_nokafka": nokafka.server_ctx_switches,
                             "add_wait": waiting.server_ctx_switches}}


def metrics_ab(args: argparse.Namespace, serving: Any, measured: Any) -> int:
    """Adds with the HTTP metrics on and off, alternating (on/off, then off/on, ...) so drift
    on a shared machine hits both alike; each variant's median CPU per add and the ratio."""
    runs: dict[str, list[Result]] = {"on": [], "off": []}
    for i in range(args.metrics_ab):
        for variant in (("on", "off") if i % 2 == 0 else ("off", "on")):
            url = f"http://127.0.0.1:{free_port()}"
            env = {"WRITE_HTTP_METRICS": "1" if variant == "on" else "0"}
            with serving(url, "cartstream serve write", env) as proc:
                result = measured(f"add_metrics_{variant}", proc, url, "add")
            runs[variant].append(result)
            print(f"round {i + 1} metrics {variant}: {result.accepted_rps:.0f} adds/s, "
                  f"{result.server_cpu_ms} ms CPU per add", flush=True)

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    summary = {v: {"cpu_ms_per_add": median([r.server_cpu_ms or 0.0 for r in rs]),
                   "adds_per_s": median([r.accepted_rps for r in rs])}
               for v, rs in runs.items()}
    ratio = summary["on"]["cpu_ms_per_add"] / summary["off"]["cpu_ms_per_add"]
    print(table([r for rs in runs.values() for r in rs]))
    print(f"median CPU per add: metrics on {summary['on']['cpu_ms_per_add']:.4f} ms, off "
          f"{summary['off']['cpu_ms_per_add']:.4f} ms: ratio {ratio:.3f}; adds/s on/off "
          f"{summary['on']['adds_per_s'] / summary['off']['adds_per_s']:.3f}")
    out = args.output.with_name("write_api_metrics.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "write_api --metrics-ab",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rounds": args.metrics_ab, "duration_s": args.duration,
        "connections": args.connections, "cpus": os.cpu_count(),
        "summary": summary, "cpu_per_add_ratio_on_off": round(ratio, 4),
        "runs": {v: [asdict(r) for r in rs] for v, rs in runs.items()},
    }, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the JSON report."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=float, default=15.0, help="seconds per scenario")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of adds before measuring")
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--workers", type=int, help="WRITE_WORKERS (default: the service's)")
    p.add_argument("--threads", type=int, help="WRITE_THREADS (default: the service's)")
    p.add_argument("--linger-ms", type=int, help="WRITE_LINGER_MS (default: the service's)")
    p.add_argument("--batch-size", type=int, help="WRITE_BATCH_SIZE (default: the service's)")
    p.add_argument("--no-catalog-check", action="store_true",
                   help="WRITE_CATALOG_CHECK=0 (default: check, as in production)")
    p.add_argument("--customers", type=int, default=10000, help="distinct customerIds")
    p.add_argument("--item", default="1", help="itemId to add (in the sample catalog)")
    p.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP", "localhost:9092"))
    p.add_argument("--topic", help="topic to write to (default: a fresh 6-partition topic, "
                   "deleted afterwards, so the running pipeline does not consume the bench's "
                   "writes on the same cores; that cost ~40%% of the rate here)")
    p.add_argument("--profiles", default="dev,secure",
                   help="profiles whose adds are measured, alternately, in each round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of adds")
    p.add_argument("--output", type=Path, default=RESULTS)
    p.add_argument("--metrics-ab", type=int, default=0, metavar="ROUNDS",
                   help="only measure adds with WRITE_HTTP_METRICS on and off, alternately, "
                   "ROUNDS times each; report the CPU-per-add ratio (bench/results/"
                   "write_api_metrics.json)")
    args = p.parse_args(argv)
    profiles = [x.strip() for x in args.profiles.split(",") if x.strip()]
    if not profiles or any(x not in PROFILES for x in profiles):
        p.error(f"--profiles: a comma-separated subset of {','.join(PROFILES)}")
    use_wrk = shutil.which("wrk") is not None
    if not use_wrk:
        print("wrk not found (apt-get install -y wrk); using the slower Python client",
              file=sys.stderr)
        if "secure" in profiles:  # the Python client sends no tokens
            print("the secure profile needs wrk: measuring dev only", file=sys.stderr)
            profiles = [x for x in profiles if x != "secure"] or ["dev"]

    from cart_write.config import Config

    effective = Config.from_env({
        **os.environ,
        **{k: str(v) for k, v in (("WRITE_WORKERS", args.workers),
                                  ("WRITE_THREADS", args.threads),
                                  ("WRITE_LINGER_MS", args.linger_ms),
                                  ("WRITE_BATCH_SIZE", args.batch_size)) if v is not None},
    })
    load_before = os.getloadavg()[0]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    scratch = args.topic is None
    if scratch:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": args.kafka})
        args.topic = f"{run_id}-events"
        admin.create_topics([NewTopic(args.topic, 6, 1)])[args.topic].result(timeout=30)
    from bench.cpu import tree_cpu_s, tree_ctx_switches

    broker = broker_pid()
    with tempfile.TemporaryDirectory(prefix="write-bench-") as tmp:
        script = Path(tmp) / "write_api.lua"
        script.write_text(LUA)
        secure_lua, secure_env = secure_tokens(run_id, args.customers, args.wrk_threads)
        secure_script = Path(tmp) / "write_api_secure.lua"
        secure_script.write_text(secure_lua + LUA)

        def measured(scenario: str, proc: subprocess.Popen[bytes], url: str,
                     mode: str, lua: Path = script) -> Result:
            """One measured run, with the CPU the server and the broker spent per request."""
            cpu0, broker0 = tree_cpu_s(proc.pid), broker and tree_cpu_s(broker)
            ctx0 = tree_ctx_switches(proc.pid)
            result = reduce(scenario, drive(url, mode, args.duration, lua), args.connections)
            n = max(1, result.requests)
            result.server_cpu_ms = round((tree_cpu_s(proc.pid) - cpu0) * 1000 / n, 4)
            result.server_ctx_switches = round((tree_ctx_switches(proc.pid) - ctx0) / n, 2)
            if broker:
                result.broker_cpu_ms = round((tree_cpu_s(broker) - broker0) * 1000 / n, 4)
            return result

        def drive(base: str, mode: str, seconds: float, lua: Path = script) -> dict[str, Any]:
            if not use_wrk:
                return run_python(base, mode, run_id, args.customers, args.item,
                                  args.connections, seconds)
            url = base if mode in ("add", "addkey") else f"{base}/healthz"
            lua_args = [mode, run_id, str(args.customers), args.item]
            return run_wrk(url, lua, lua_args, args.connections, args.wrk_threads, seconds)

        @contextmanager
        def serving(url: str, module: str, env_extra: dict[str, str] | None = None,
                    lua: Path = script) -> Iterator[subprocess.Popen[bytes]]:
            """A ready, warmed-up server of `module` at `url`; its log is shown if it fails."""
            log_path = Path(tmp) / f"server-{url.rsplit(':', 1)[1]}.log"
            proc = start_server(args, int(url.rsplit(":", 1)[1]), log_path, module=module,
                                env_extra=env_extra)
            try:
                wait_ready(url, proc)
                if args.warmup > 0:
                    drive(url, "add", args.warmup, lua)
                yield proc
            except BaseException:
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            finally:
                stop_server(proc)

        rounds: dict[str, list[Result]] = {"dev": [], "secure": []}
        keyed = ceiling = None
        appended = 0
        try:
            if args.metrics_ab:
                return metrics_ab(args, serving, measured)
            with ExitStack() as stack:
                # Both profiles' servers at once (an idle one costs little), measured in
                # alternating rounds so a neighbour's load on this machine hits both alike. In
                # secure each add carries its customer's bearer token, verified (cached per
                # process) and counted against the rate limit in Redis.
                servers: dict[str, tuple[subprocess.Popen[bytes], str, Path]] = {}
                for profile in profiles:
                    url = base if profile == "dev" else f"http://127.0.0.1:{free_port()}"
                    env, lua = (None, script) if profile == "dev" else (secure_env, secure_script)
                    servers[profile] = (stack.enter_context(
                        serving(url, "cartstream serve write", env, lua)), url, lua)
                for i in range(args.rounds):
                    for profile, (proc, url, lua) in servers.items():
                        before = topic_end_offsets(args.kafka, args.topic)
                        name = "add" if profile == "dev" else "add_secure"
                        rounds[profile].append(measured(name, proc, url, "add", lua))
                        if i == 0 and profile == "dev":
                            appended = topic_end_offsets(args.kafka, args.topic) - before
                if "dev" in servers:
                    proc, url, _lua = servers["dev"]
                    # The same adds, each with its own Idempotency-Key: what the records cost.
                    keyed = measured("add_idempotency_key", proc, url, "addkey")
                    ceiling = measured("healthz", proc, url, "get")
        finally:
            if scratch:
                admin.delete_topics([args.topic])
        add = combine("add", rounds["dev"]) if rounds["dev"] else None
        secure = combine("add_secure", rounds["secure"]) if rounds["secure"] else None
        # The same add path with a publisher that acks at once: what Kafka costs on top.
        nokafka_base = f"http://127.0.0.1:{free_port()}"
        with serving(nokafka_base, "bench.write_nokafka") as proc:
            nokafka = measured("add_nokafka", proc, nokafka_base, "add")
        # The same again, each request parked on its thread as long as an ack took (the median
        # time Kafka added): what waiting costs with no Kafka client code at all. Without a dev
        # add run there is no ack time to imitate: 20 ms, the usual one here.
        wait_ms = max(1.0, add.p50_ms - nokafka.p50_ms) if add is not None else 20.0
        wait_base = f"http://127.0.0.1:{free_port()}"
        with serving(wait_base, "bench.write_nokafka",
                     {"NOKAFKA_ACK_WAIT_MS": f"{wait_ms:.1f}"}) as proc:
            waiting = measured("add_wait", proc, wait_base, "add")

    results = [r for r in (add, keyed, secure, nokafka, waiting, ceiling) if r is not None]
    secure_vs_dev = (versus(secure, add, rounds["secure"], rounds["dev"])
                     if add is not None and secure is not None else None)
    print(table(results))
    split = kafka_cost(add, nokafka, waiting, wait_ms) if add is not None else {}
    if add is not None:
        print(f"records appended to {args.topic} during the first dev add run: {appended} "
              f"(acknowledged: {rounds['dev'][0].accepted}; other writers may add more)")
        print(f"CPU per acked add: {split}")
    if secure_vs_dev is not None:
        print(f"secure/dev: {secure_vs_dev}")
    print(f"load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")
    report = {
        "benchmark": "write_api",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(),
                    # Other work on the machine skews the numbers; this shows how busy it was.
                    "loadavg_1m_before": load_before, "loadavg_1m_after": os.getloadavg()[0]},
        "server": {"entry": "cartstream serve write (granian, WSGI)",
                   "workers": effective.workers, "threads": effective.threads,
                   "linger_ms": effective.linger_ms, "batch_size": effective.batch_size,
                   "catalog_check": not args.no_catalog_check},
        "load": {"tool": "wrk" if use_wrk else "python threads",
                 "connections": args.connections, "wrk_threads": args.wrk_threads,
                 "duration_s": args.duration, "customers": args.customers},
        "profiles": profiles, "rounds": args.rounds,
        "results": [asdict(r) for r in results],
        "round_results": {p: [asdict(r) for r in rs] for p, rs in rounds.items() if rs},
        "records_appended_during_add_run": appended,
        "kafka_cost": split,
        "secure_vs_dev": secure_vs_dev,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
