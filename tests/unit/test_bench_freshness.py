"""bench/freshness.py: request bytes, response parsing, and the keep-alive client on loopback."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

_PATH = Path(__file__).resolve().parents[2] / "bench" / "freshness.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_freshness", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the class body runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fr = _load()


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert fr.percentile(values, 50) == 51.0
    assert fr.percentile(values, 99) == 100.0
    assert fr.percentile([3.0], 99) == 3.0


def test_summary_ms() -> None:
    assert fr.summary_ms([]) is None
    assert fr.summary_ms([0.001, 0.002, 0.5], (50,)) == {"p50": 2.0, "max": 500.0}


def test_split_url() -> None:
    assert fr.split_url("http://127.0.0.1:8080") == ("127.0.0.1", 8080, "")
    assert fr.split_url("http://h/base/") == ("h", 80, "/base")
    with pytest.raises(ValueError):
        fr.split_url("https://h")


def test_build_request() -> None:
    assert fr.build_request("GET", "h", 7, "/a?b=1") == b"GET /a?b=1 HTTP/1.1\r\nHost: h:7\r\n\r\n"
    raw = fr.build_request("POST", "h", 7, "/add", b'{"x":1}')
    assert raw.startswith(b"POST /add HTTP/1.1\r\n")
    assert b"Content-Length: 7\r\n" in raw
    assert raw.endswith(b'\r\n\r\n{"x":1}')


def test_parse_head() -> None:
    head = fr.parse_head(b"HTTP/1.1 202 Accepted\r\ncontent-length: 12\r\nserver: x\r\n\r\n")
    assert (head.status, head.content_length, head.chunked, head.keep_alive) == (202, 12, False,
                                                                                 True)
    head = fr.parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                         b"Connection: close\r\n\r\n")
    assert head.chunked and not head.keep_alive and head.content_length is None
    assert not fr.parse_head(b"HTTP/1.0 200 OK\r\n\r\n").keep_alive
    with pytest.raises(ValueError):
        fr.parse_head(b"garbage\r\n\r\n")


def test_error_code() -> None:
    assert fr.error_code(b'{"error":{"code":"TOO_MANY_WAITERS","message":"m"}}') == (
        "TOO_MANY_WAITERS")
    assert fr.error_code(b"not json") == ""
    assert fr.error_code(b"[1]") == ""


async def _serve(answers: list[bytes]) -> tuple[asyncio.Server, int, list[int]]:
    """A server that answers each request with the next canned answer; counts connections."""
    conns: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conns.append(1)
        try:
            while answers:
                await reader.readuntil(b"\r\n\r\n")
                answer = answers.pop(0)
                if answer == b"DROP":
                    break
                writer.write(answer)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], conns


def test_client_keep_alive_chunked_and_reconnect() -> None:
    async def run() -> None:
        server, port, conns = await _serve([
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
            b"DROP",
            b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ])
        conn = fr.HttpConnection("127.0.0.1", port)
        get = fr.build_request("GET", "127.0.0.1", port, "/")
        assert await conn.request(get) == (202, b"ok")
        assert await conn.request(get) == (200, b"abcde")
        assert len(conns) == 1  # both answers on one keep-alive connection
        with pytest.raises(asyncio.IncompleteReadError):
            await conn.request(get)
        assert await conn.request(get) == (503, b"")  # reconnected after the drop
        assert len(conns) == 2
        conn.close()
        server.close()
        await server.wait_closed()

    asyncio.run(run())


def test_pool_exhaustion() -> None:
    async def run() -> None:
        pool = fr.Pool("127.0.0.1", 9, 2)
        a, b = pool.try_acquire(), pool.try_acquire()
        assert a is not None and b is not None and pool.try_acquire() is None
        waiter = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        assert not waiter.done()
        pool.release(a)
        assert await waiter is a

    asyncio.run(run())
