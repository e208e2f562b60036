"""Load a product catalog into `product-details-events`.

    python -m connectors.catalog load FILE [--dry-run]

FILE holds JSON lines, `key:json` lines (as typed into kafka-console-producer) or CSV with a
header `productId,productName,price,stockQty`. Every row is checked against the contract; bad
rows are reported with their line numbers and skipped, good rows are loaded. Exit status: 0 when
every row was good, 1 when some were bad (the good ones are loaded all the same), 2 on errors
such as a missing file or an unreachable broker.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import KafkaError, Message, Producer
from tqdm import tqdm

from cart_contract import ContractError, Product, decode_product, encode_product
from connectors.config import Config


@dataclass(frozen=True)
class BadRow:
    """A row that broke the contract."""

    line: int
    reason: str


def parse_rows(text: str) -> Iterator[tuple[int, Product | BadRow]]:
    """Yield (line number, product or bad row) for every non-blank line of the file."""
    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    if first.lower().startswith("productid"):
        reader = csv.DictReader(io.StringIO(text))
        for row in reader:
            line = reader.line_num
            try:
                stock = row.get("stockQty", "")
                body = {**row, "stockQty": int(stock) if stock.strip().isdigit() else stock}
                yield line, decode_product(None, orjson.dumps(body))
            except ContractError as exc:
                yield line, BadRow(line, str(exc))
        return
    for number, raw in enumerate(lines, start=1):
        raw = raw.strip()
        if not raw:
            continue
        key = None
        if not raw.startswith("{"):
            key, sep, raw = raw.partition(":")
            if not sep:
                yield number, BadRow(number, "expected JSON or key:JSON")
                continue
        try:
            product = decode_product(key, raw.encode())
        except ContractError as exc:
            yield number, BadRow(number, str(exc))
            continue
        if product is None:
            yield number, BadRow(number, "empty record")
            continue
        yield number, product


def load(path: Path, config: Config, dry_run: bool = False) -> tuple[int, list[BadRow]]:
    """Produce every good row (acks=all, unless dry_run); return (good rows, bad rows)."""
    rows = list(parse_rows(path.read_text()))
    bad = [r for _, r in rows if isinstance(r, BadRow)]
    good = [r for _, r in rows if isinstance(r, Product)]
    if dry_run or not good:
        return len(good), bad
    producer = Producer({"bootstrap.servers": config.kafka_bootstrap, "acks": "all",
                         "enable.idempotence": True, "linger.ms": 5})
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            failures.append(f"{msg.key()!r}: {err}")

    for p in tqdm(good, desc="products", unit="row", disable=len(good) < 1000):
        while True:
            try:
                producer.produce(config.topic_products, key=p.product_id.encode(),
                                 value=encode_product(p), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)  # local queue full: let deliveries drain
        producer.poll(0)
    if producer.flush(60) or failures:
        raise RuntimeError(f"not every product was acknowledged: {failures[:5] or 'timeout'}")
    return len(good), bad


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m connectors.catalog", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("load", help="validate and load a catalog file")
    cmd.add_argument("file", type=Path)
    cmd.add_argument("--dry-run", action="store_true", help="validate only, load nothing")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        print(f"no such file: {args.file}", file=sys.stderr)
        return 2
    try:
        loaded, bad = load(args.file, Config.from_env(), args.dry_run)
    except (RuntimeError, KafkaError) as exc:
        print(f"load failed: {exc}", file=sys.stderr)
        return 2
    for b in bad:
        print(f"{args.file}:{b.line}: {b.reason}", file=sys.stderr)
    verb = "valid (dry run, nothing loaded)" if args.dry_run else "loaded"
    print(f"{loaded} products {verb}, {len(bad)} bad rows")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
