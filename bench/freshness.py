"""Freshness: time from the write API's 202 to the read API answering with that offset.

    python bench/freshness.py [--rate 500] [--seconds 20] [--sample-every 5] [--max-reads 10]
                              (against a running `make up`)

Writes at a steady open-loop rate (adds for random customers of the sample catalog): write i goes
out at start + i / rate whether or not earlier writes were answered. After the 202 of every
`sample-every`-th write, a reader asks `GET /api/v1/<customer>?minOffset=<offset>`; the time from
the 202 to its 200 is the freshness of that write. At most `max-reads` such waits are in flight so
that they stay within the read API's bounded waiter pool (READ_MAX_WAITERS per worker); a sample
that finds them all busy is skipped and counted. Reports write latency, freshness percentiles and
the generator's own CPU, and writes bench/results/freshness.json.

The client is a minimal asyncio HTTP/1.1 keep-alive client on fixed connection pools: a thread
per request (the previous `requests` version) cost most of a core on a 2-core machine shared with
the pipeline, which slowed the very latencies being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

RESULTS = Path(__file__).resolve().parent / "results"
REQUEST_TIMEOUT_S = 10.0
READ_WAIT_MS = 5000
# What a request can fail with; all of them leave the connection closed for a fresh reconnect.
REQUEST_ERRORS = (OSError, EOFError, TimeoutError, ValueError, asyncio.LimitOverrunError)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) of the values (nearest rank, as before the rewrite)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def summary_ms(values_s: list[float], qs: tuple[int, ...] = (50, 99)) -> dict[str, float] | None:
    """{"p<q>": ms, ...} plus "max" of durations given in seconds; None when there are none."""
    if not values_s:
        return None
    out = {f"p{q}": round(percentile(values_s, q) * 1000, 1) for q in qs}
    out["max"] = round(max(values_s) * 1000, 1)
    return out


def error_code(body: bytes) -> str:
    """The code of an API error body `{"error": {"code": ...}}`, or "" if it has none."""
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""
    return code if isinstance(code, str) else ""


def split_url(url: str) -> tuple[str, int, str]:
    """(host, port, path prefix without trailing slash) of an http:// base URL."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"only plain http://host[:port] base URLs are supported: {url!r}")
    return parts.hostname, parts.port or 80, parts.path.rstrip("/")


def build_request(method: str, host: str, port: int, target: str, body: bytes = b"") -> bytes:
    """The bytes of one HTTP/1.1 keep-alive request (JSON body if any)."""
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if body or method in ("POST", "PUT", "PATCH"):
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode("latin-1") + body


@dataclass(frozen=True)
class ResponseHead:
    """Status line and the headers the client acts on."""

    status: int
    content_length: int | None
    chunked: bool
    keep_alive: bool


def parse_head(raw: bytes) -> ResponseHead:
    """Parse a response's status line and headers (raw ends with the blank line)."""
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    if not version.startswith("HTTP/1.") or len(rest) < 3 or not rest[:3].isdigit():
        raise ValueError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = headers.get("content-length")
    connection = headers.get("connection", "").lower()
    # HTTP/1.0 closes unless asked otherwise; HTTP/1.1 keeps alive unless told to close.
    keep_alive = "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection
    return ResponseHead(status=int(rest[:3]), content_length=int(length) if length else None,
                        chunked="chunked" in headers.get("transfer-encoding", "").lower(),
                        keep_alive=keep_alive)


class HttpConnection:
    """One keep-alive connection, (re)opened on demand; one request at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        """Open the connection if it is not open."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        """Drop the connection; the next request reconnects."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request, return (status, body); on any failure the connection is dropped."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                await self.connect()
                assert self._reader is not None and self._writer is not None
                self._writer.write(raw)
                head = parse_head(await self._reader.readuntil(b"\r\n\r\n"))
                if head.content_length is not None:
                    body = await self._reader.readexactly(head.content_length)
                elif head.chunked:
                    body = await self._read_chunked()
                else:
                    body = await self._reader.read()
                    head = ResponseHead(head.status, len(body), False, keep_alive=False)
        except BaseException:
            # A half-read answer leaves the stream out of step: never reuse the connection.
            self.close()
            raise
        if not head.keep_alive:
            self.close()
        return head.status, body

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._skip_trailers()
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    async def _skip_trailers(self) -> None:
        assert self._reader is not None
        while await self._reader.readuntil(b"\r\n") != b"\r\n":
            pass


class Pool:
    """A fixed set of connections to one server, handed out one request at a time."""

    def __init__(self, host: str, port: int, size: int) -> None:
        self.size = size
        self._idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
        for _ in range(size):
            self._idle.put_nowait(HttpConnection(host, port))

    async def open_all(self) -> None:
        """Connect every connection up front so the first timed requests pay no handshake."""
        conns = [self._idle.get_nowait() for _ in range(self.size)]
        try:
            await asyncio.gather(*(c.connect() for c in conns))
        finally:
            for c in conns:
                self._idle.put_nowait(c)

    def try_acquire(self) -> HttpConnection | None:
        """An idle connection, or None when all are busy."""
        try:
            return self._idle.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def acquire(self) -> HttpConnection:
        """An idle connection, waiting for one if all are busy."""
        return await self._idle.get()

    def release(self, conn: HttpConnection) -> None:
        """Give a connection back."""
        self._idle.put_nowait(conn)

    def close(self) -> None:
        """Close every idle connection."""
        while (c := self.try_acquire()) is not None:
            c.close()


@dataclass
class Stats:
    """Everything one run measures."""

    write_s: list[float] = field(default_factory=list)
    send_lag_s: list[float] = field(default_factory=list)
    fresh_s: list[float] = field(default_factory=list)
    trace: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    read_status: dict[str, int] = field(default_factory=dict)
    acked: int = 0
    pool_exhausted: int = 0
    samples_skipped: int = 0

    def error(self, kind: str) -> None:
        """Count one error of this kind."""
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Generator:
    """Open-loop writer plus sampled read-your-write readers."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        whost, wport, self.wpath = split_url(args.write_url)
        rhost, rport, self.rpath = split_url(args.read_url)
        self.whost, self.wport, self.rhost, self.rport = whost, wport, rhost, rport
        self.writes = Pool(whost, wport, args.write_conns)
        # The read pool size is the cap on concurrent minOffset waits.
        self.reads = Pool(rhost, rport, args.max_reads)
        self.stats = Stats()
        self._tasks: set[asyncio.Task[None]] = set()
        self.last_sent = 0.0

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        # The loop only keeps weak references to tasks.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def write(self, customer: str, sample: bool, due: float) -> None:
        """One add; if sampled and accepted, start a freshness read."""
        conn = self.writes.try_acquire()
        if conn is None:
            # Every connection is waiting on the server: the schedule can only slip from here.
            self.stats.pool_exhausted += 1
            conn = await self.writes.acquire()
        body = json.dumps({"customerId": customer, "itemId": str(random.randint(1, 30)),
                           "qty": 1}).encode()
        raw = build_request("POST", self.whost, self.wport, f"{self.wpath}/api/v1/add", body)
        sent = time.monotonic()
        self.stats.send_lag_s.append(sent - due)
        self.last_sent = sent
        try:
            status, answer = await conn.request(raw)
        except REQUEST_ERRORS as exc:
            self.stats.error(f"write {type(exc).__name__}")
            return
        finally:
            self.writes.release(conn)
        acked = time.monotonic()
        self.stats.write_s.append(acked - sent)
        if status != 202:
            self.stats.error(f"write {status}")
            return
        self.stats.acked += 1
        if sample:
            try:
                doc = json.loads(answer)
                offset = int(doc["offset"])
            except (ValueError, KeyError, TypeError):
                self.stats.error("write bad body")
                return
            reader = self.reads.try_acquire()
            if reader is None:
                self.stats.samples_skipped += 1
                return
            if self.args.trace:
                self.stats.trace.append({"customer": customer, "partition": doc.get("partition"),
                                         "offset": offset, "acked_unix": time.time()})
            self._spawn(self.wait_for(reader, customer, offset, acked,
                                      self.stats.trace[-1] if self.args.trace else None))

    async def wait_for(self, conn: HttpConnection, customer: str, offset: int, acked: float,
                       trace: dict[str, Any] | None = None) -> None:
        """Ask for the customer's cart at minOffset; record freshness on a 200."""
        target = f"{self.rpath}/api/v1/{customer}?minOffset={offset}&timeout={READ_WAIT_MS}"
        try:
            status, body = await conn.request(build_request("GET", self.rhost, self.rport, target))
        except REQUEST_ERRORS as exc:
            self.stats.error(f"read {type(exc).__name__}")
            return
        finally:
            self.reads.release(conn)
        self.stats.read_status[str(status)] = self.stats.read_status.get(str(status), 0) + 1
        if trace is not None:
            trace.update(status=status, fresh_ms=round((time.monotonic() - acked) * 1000, 1))
        if status == 200:
            self.stats.fresh_s.append(time.monotonic() - acked)
        else:
            # 503 means TOO_MANY_WAITERS or STORE_UNAVAILABLE: only the first is our sampling.
            self.stats.error(f"read {status} {error_code(body)}".rstrip())

    async def run(self) -> dict[str, Any]:
        """Run the schedule, wait for stragglers, return the result document."""
        args = self.args
        await asyncio.gather(self.writes.open_all(), self.reads.open_all())
        total = int(args.rate * args.seconds)
        cpu0 = time.process_time()
        start = time.monotonic()
        i = 0
        while i < total:
            now = time.monotonic()
            # Fire everything that is due, so a late wake-up catches up instead of drifting.
            while i < total and start + i / args.rate <= now:
                self._spawn(self.write(f"fresh-{random.randrange(5000)}",
                                       i % args.sample_every == 0, start + i / args.rate))
                i += 1
            if i < total:
                await asyncio.sleep(max(0.0, start + i / args.rate - time.monotonic()))
        while self._tasks:
            for outcome in await asyncio.gather(*list(self._tasks), return_exceptions=True):
                # A bug in the generator must show in the result, not vanish in the drain.
                if isinstance(outcome, BaseException):
                    self.stats.error(f"generator {type(outcome).__name__}")
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - start
        self.writes.close()
        self.reads.close()
        return self.result(total, max(self.last_sent - start, 1e-9), cpu, wall)

    def result(self, total: int, send_s: float, cpu: float, wall: float) -> dict[str, Any]:
        """The JSON document (the first fields are those bench/report.py reads)."""
        s = self.stats
        # total - 1 intervals fit between the first and the last send.
        achieved = (total - 1) / send_s if total > 1 else float(total)
        return {
            "writes": total, "achieved_rate": round(achieved), "errors": s.errors,
            "samples": len(s.fresh_s), "sample_every": self.args.sample_every,
            "write_ms": summary_ms(s.write_s, (50, 90, 99)),
            "freshness_ms": summary_ms(s.fresh_s, (50, 90, 99)),
            "target_p99_ms": 500,
            "rate": self.args.rate, "acked_writes": s.acked,
            "samples_skipped": s.samples_skipped, "max_reads": self.args.max_reads,
            "read_status": dict(sorted(s.read_status.items())),
            "reads_503": s.read_status.get("503", 0), "reads_504": s.read_status.get("504", 0),
            "write_conns": self.args.write_conns, "pool_exhausted": s.pool_exhausted,
            "send_lag_ms": summary_ms(s.send_lag_s, (50, 99)),
            "generator_cpu_s": round(cpu, 2),
            "generator_cpu_ms_per_write": round(cpu * 1000 / total, 3) if total else None,
            "generator_cpu_pct_of_core": round(100 * cpu / wall, 1) if wall else None,
        }


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=500, help="writes per second")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--sample-every", type=int, default=5,
                        help="measure the freshness of one write in this many")
    parser.add_argument("--max-reads", type=int, default=10,
                        help="cap on concurrent minOffset waits (read API: 6 per worker)")
    parser.add_argument("--write-conns", type=int, default=64,
                        help="keep-alive connections to the write API")
    parser.add_argument("--write-url", default=os.environ.get("WRITE_URL",
                                                              "http://127.0.0.1:8080"))
    parser.add_argument("--read-url", default=os.environ.get("READ_URL", "http://127.0.0.1:7000"))
    parser.add_argument("--trace", type=Path, default=None,
                        help="also write every sampled write (customer, partition, offset, ack "
                             "time, freshness) as JSON lines here, to line up with Kafka records")
    args = parser.parse_args()
    gen = Generator(args)
    result = asyncio.run(gen.run())
    if args.trace:
        args.trace.write_text("".join(json.dumps(t) + "\n" for t in gen.stats.trace))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "freshness.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
