"""Load a product catalog into `product-details-events`.

    cartstream catalog load FILE [--dry-run] [--quiet]

FILE holds one product per line, as any of:
  JSON lines   {"productId":"1","productName":"IPhone 12","price":"65000","stockQty":768}
  key:json     1:{"productId":"1","productName":"IPhone 12","price":"65000","stockQty":768}
               (what kafka-console-producer takes with parse.key=true key.separator=:)
  CSV          a header line `productId,productName,price,stockQty`, then one row per product
Blank lines are skipped. Every row is checked against the contract; bad rows are reported as
FILE:LINE: REASON: message and skipped, good rows are produced (acks=all, keyed by productId,
in file order, so a later row for the same product wins). Files over 1 MB show their progress:
a bar on a terminal, else a log line every few seconds.

Exit status: 0 every row was good and loaded; 1 some rows were bad (the good ones were loaded
all the same, or with --dry-run only checked); 2 nothing could be done (no such file, broker
unreachable, a record not acknowledged).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import orjson
from confluent_kafka import KafkaError, Message, Producer

from cart_contract import ContractError, Product, decode_product, encode_product
from cart_contract.retry import retrying
from connectors.config import Config
from connectors.progress import Progress

PROGRESS_MIN_BYTES = 1 << 20  # files smaller than this load without a progress bar
_NOT_UTF8 = "INVALID_ENCODING: the line is not UTF-8"


@dataclass(frozen=True)
class BadRow:
    """A row that broke the contract."""

    line: int
    reason: str


def _csv_rows(lines: Iterable[str], first_line: int) -> Iterator[tuple[int, Product | BadRow]]:
    # csv keeps track of quoted fields spanning lines; line_num counts physical lines read.
    reader = csv.DictReader(lines)
    for row in reader:
        line = first_line + reader.line_num - 1
        try:
            if None in row or any(v is None for v in row.values()):
                raise ContractError("WRONG_TYPE", "the row does not have the header's columns")
            stock = row.get("stockQty")
            body = {**row, "stockQty": int(stock) if stock and stock.strip().isdigit() else stock}
            product = decode_product(None, orjson.dumps(body))
        except ContractError as exc:
            yield line, BadRow(line, str(exc))
            continue
        except orjson.JSONEncodeError:
            yield line, BadRow(line, _NOT_UTF8)
            continue
        if product is not None:
            yield line, product


def _line_row(number: int, raw: str) -> Product | BadRow:
    key = None
    if not raw.startswith("{"):
        # The key ends at the ':' before the JSON: ids may contain ':' themselves.
        cut = raw.find(":{")
        if cut < 0:
            return BadRow(number, "INVALID_JSON: expected a JSON object or key:{json}")
        key, raw = raw[:cut], raw[cut + 1:]
    try:
        product = decode_product(key, raw.encode())
    except ContractError as exc:
        return BadRow(number, str(exc))
    except UnicodeEncodeError:
        return BadRow(number, _NOT_UTF8)
    return product if product is not None else BadRow(number, "MISSING_FIELD: empty record")


def parse_lines(lines: Iterable[str]) -> Iterator[tuple[int, Product | BadRow]]:
    """Yield (line number, product or bad row) for every row of a catalog file's lines."""
    it = iter(enumerate(lines, start=1))
    for number, line in it:
        raw = line.strip().lstrip("\ufeff")
        if not raw:
            continue
        if raw.lower().startswith("productid"):
            yield from _csv_rows((raw, *(ln for _, ln in it)), number)
            return
        yield number, _line_row(number, raw)


def parse_rows(text: str) -> Iterator[tuple[int, Product | BadRow]]:
    """parse_lines over a whole file's text."""
    return parse_lines(text.splitlines(keepends=True))


@dataclass
class LoadResult:
    """What a load did."""

    loaded: int
    bad: list[BadRow]


class _Delivery:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failures.append(f"{msg.key()!r}: {err}")


def load_stream(lines: Iterable[str], config: Config, dry_run: bool = False) -> LoadResult:
    """Validate every row and produce the good ones (unless dry_run)."""
    producer = None if dry_run else Producer({
        **config.kafka_client(), "acks": "all", "enable.idempotence": True,
        "linger.ms": 20, "compression.type": "lz4", "message.timeout.ms": 30000,
    })
    delivery = _Delivery()
    # A full local queue is back-pressure, not a failure: wait serving deliveries (poll),
    # quietly and for as long as it takes.
    produce = None if producer is None else retrying(
        "catalog produce", on=BufferError, first_s=0.1, max_s=0.1, sleep=producer.poll,
        level=logging.DEBUG)
    result = LoadResult(0, [])
    for _, row in parse_lines(lines):
        if isinstance(row, BadRow):
            result.bad.append(row)
            continue
        result.loaded += 1
        if producer is None or produce is None:
            continue
        produce.call(producer.produce, config.topic_products, key=row.product_id.encode(),
                     value=encode_product(row), on_delivery=delivery)
        producer.poll(0)
    if producer is not None:
        remaining = producer.flush(60)
        if remaining or delivery.failures:
            raise RuntimeError(f"{remaining} products unacknowledged, {len(delivery.failures)} "
                               f"refused, e.g. {delivery.failures[:3]}")
    return result


def load(path: Path, config: Config, dry_run: bool = False,
         show_progress: bool = False) -> tuple[int, list[BadRow]]:
    """Load a catalog file; return (good rows, bad rows)."""
    # surrogateescape: a line that is not UTF-8 becomes one bad row, not a failed load.
    with path.open(encoding="utf-8", errors="surrogateescape", newline="") as f:
        result = load_stream(_progress(f, path, show_progress), config, dry_run)
    return result.loaded, result.bad


def _progress(f: TextIO, path: Path, show: bool) -> Iterator[str]:
    size = path.stat().st_size
    if not show or size < PROGRESS_MIN_BYTES:
        yield from f
        return
    n = 0
    with Progress(f"catalog {path.name}", _count_lines(path), "rows") as progress:
        for n, line in enumerate(f, start=1):
            if n % 1000 == 0:
                progress.set(n)
            yield line
        progress.set(n)


def _count_lines(path: Path) -> int:
    # A pass over the bytes costs little next to parsing and producing, and gives an ETA.
    lines, last = 0, b"\n"
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")
