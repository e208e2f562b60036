"""Quart or Starlette for the read API: the plain cart read on each, same run, alternating.

The issue asked for both to be measured before choosing. Each app here is the plain read
alone (`GET /api/v1/<customerId>` -> HMGET over redis.asyncio, the document bytes with an
ETag), served like the read API (granian ASGI, READ_WORKERS processes), driven by wrk over
random cached customers, rounds alternating between the two so a neighbour's load hits both.

    .venv/bin/python bench/asgi_frameworks.py [--carts 10000] [--duration 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
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
from bench.read_api import (  # noqa: E402
    CART_REQUEST,
    DONE_HOOK,
    free_port,
    run_wrk,
    seed,
    stop_server,
    unseed,
)
from cart_contract.ids import ID_RE  # noqa: E402
from cart_contract.layout import cart_key  # noqa: E402

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
_client: list[Any] = []


async def _read(customer_id: str) -> tuple[int, bytes, dict[str, str]]:
    import redis.asyncio as aioredis

    if not _client:
        _client.append(aioredis.Redis.from_url(REDIS_URL, max_connections=64))
    v, doc = await _client[0].hmget(cart_key(customer_id), ("v", "doc"))
    if doc is None:
        return 404, orjson.dumps({"error": {"code": "NOT_FOUND", "message": "no cart",
                                            "field": "customerId"}}), {}
    return 200, doc, {"ETag": f'"{int(v)}"'}


def make_starlette() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def cart(request: Request) -> Response:
        cid = request.path_params["customerId"]
        if not ID_RE.fullmatch(cid):
            return Response(b"{}", 400, media_type="application/json")
        status, body, headers = await _read(cid)
        return Response(body, status, headers, media_type="application/json")

    return Starlette(routes=[Route("/api/v1/{customerId}", cart)])


def make_quart() -> Any:
    from quart import Quart, Response

    app = Quart("bench", root_path=str(ROOT))

    @app.get("/api/v1/<customerId>")
    async def cart(customerId: str) -> Response:  # noqa: N803
        if not ID_RE.fullmatch(customerId):
            return Response(b"{}", 400, mimetype="application/json")
        status, body, headers = await _read(customerId)
        return Response(body, status, headers, mimetype="application/json")

    return app


starlette_app = make_starlette() if os.environ.get("BENCH_APP") == "starlette" else None
quart_app = make_quart() if os.environ.get("BENCH_APP") == "quart" else None


def start(name: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_APP": name, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "granian", "--interface", "asgi", "--workers", str(workers),
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
         f"bench.asgi_frameworks:{name}_app"], cwd=ROOT, env=env, start_new_session=True)
    import requests

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/api/v1/x", timeout=1)
            return proc
        except requests.ConnectionError:
            time.sleep(0.2)
    raise SystemExit(f"{name} did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--carts", type=int, default=10_000)
    p.add_argument("--duration", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--wrk-threads", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "asgi_frameworks.json")
    args = p.parse_args()
    r = redis.Redis.from_url(REDIS_URL)
    prefix = f"fw-{uuid.uuid4().hex[:8]}-"
    seed(r, prefix, args.carts)
    script = CART_REQUEST % {"prefix": prefix, "n": args.carts, "seed": 7} + DONE_HOOK
    servers = {}
    results: dict[str, list[dict[str, Any]]] = {"starlette": [], "quart": []}
    try:
        for name in results:
            port = free_port()
            servers[name] = (start(name, port, args.workers), port)
        for _name, (_proc, port) in servers.items():  # warm-up
            run_wrk(f"http://127.0.0.1:{port}", script,
                    argparse.Namespace(**{**vars(args), "duration": 2}))
        for _ in range(args.rounds):
            for name, (proc, port) in servers.items():
                cpu0 = tree_cpu_s(proc.pid)
                res = run_wrk(f"http://127.0.0.1:{port}", script, args)
                res["server_cpu_ms_per_request"] = round(
                    (tree_cpu_s(proc.pid) - cpu0) * 1000 / max(1, res["requests"]), 4)
                results[name].append(res)
                print(name, res, flush=True)
    finally:
        for proc, _port in servers.values():
            stop_server(proc)
        unseed(r, prefix)
    summary = {}
    for name, runs in results.items():
        summary[name] = {
            "requests_per_s": [x["requests_per_s"] for x in runs],
            "p99_ms": [x["p99_ms"] for x in runs],
            "server_cpu_ms_per_request": [x["server_cpu_ms_per_request"] for x in runs],
            "errors": [x["errors"] for x in runs]}
    report = {"benchmark": "plain cart read, Starlette vs Quart on granian ASGI",
              "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "workers": args.workers, "connections": args.connections,
              "loadavg": os.getloadavg()[0], "results": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
