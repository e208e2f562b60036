"""Connectors: loading a catalog (`cartstream catalog load`, console producer), the catalog sink."""

from __future__ import annotations

import subprocess
from decimal import Decimal
from pathlib import Path

import orjson
import psycopg
import pytest
import redis

from cart_contract import Product, decode_product, encode_product
from cart_contract.layout import catalog_ready_key, product_key
from connectors import catalog
from connectors.config import Config
from connectors.migrate import migrate
from tests.support.cli import cartstream
from tests.support.connectors import (
    drain,
    end_offsets,
    fresh_database,
    private_config,
    produce,
    read_topic,
)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "connectors" / "data" / "sample-catalog.jsonl"


@pytest.fixture
def cfg(kafka_bootstrap, redis_url, database_url, unique) -> Config:
    db = fresh_database(database_url, f"test_{unique}")
    with psycopg.connect(db, autocommit=True) as conn:
        migrate(conn)
    return private_config(kafka_bootstrap, redis_url, db, unique)


def topic_records(cfg: Config, n: int) -> dict[str, Product]:
    return {m.key().decode(): decode_product(m.key(), m.value())
            for m in read_topic(cfg.kafka_bootstrap, cfg.topic_products, n)}


def total(cfg: Config) -> int:
    return sum(end_offsets(cfg.kafka_bootstrap, cfg.topic_products).values())


def test_the_loader_loads_good_rows_and_reports_bad_ones(cfg, tmp_path) -> None:
    f = tmp_path / "catalog.txt"
    f.write_text(
        '1:{"productId":"1","productName":"IPhone 12","price":"65000","stockQty":768}\n'
        '{"productId":"2","productName":"Samsung","price":55000,"stockQty":5}\n'
        '3:{"productId":"3","productName":"Bad","price":"abc","stockQty":1}\n'
        "\n"
        "garbage line\n"
    )
    dry = cartstream("catalog", "load", str(f), "--dry-run", config=cfg)
    assert dry.exit_code == 1 and "2 products valid (dry run: nothing loaded)" in dry.stdout
    assert total(cfg) == 0  # a dry run produces nothing
    result = cartstream("catalog", "load", str(f), config=cfg)
    assert result.exit_code == 1
    out, err = result.stdout, result.stderr
    assert f"{f}:3: INVALID_PRICE" in err and f"{f}:5: INVALID_JSON" in err
    assert "2 products loaded" in out and "2 bad rows" in out
    assert total(cfg) == 2
    got = topic_records(cfg, 2)
    assert got["1"] == Product("1", "IPhone 12", Decimal("65000"), 768)
    assert got["2"].price == Decimal("55000")


def test_the_loader_reads_csv_and_exits_0_when_all_rows_are_good(cfg, tmp_path) -> None:
    f = tmp_path / "c.csv"
    f.write_text("productId,productName,price,stockQty\n1,Phone,649.99,3\n2,\"Cable, USB\",5,10\n")
    assert cartstream("catalog", "load", str(f), "--quiet", config=cfg).exit_code == 0
    assert topic_records(cfg, 2)["2"] == Product("2", "Cable, USB", Decimal("5"), 10)


def test_a_missing_file_exits_2(cfg, tmp_path) -> None:
    result = cartstream("catalog", "load", str(tmp_path / "nope.jsonl"), config=cfg)
    assert result.exit_code == 2 and "no such file" in result.stderr


def test_the_sample_catalog(cfg) -> None:
    lines = SAMPLE.read_text().splitlines()
    assert orjson.loads(lines[0]) == {"productId": "1", "productName": "IPhone 12",
                                      "price": "65000", "stockQty": 768}
    assert orjson.loads(lines[1]) == {"productId": "2", "productName": "Samsung Galaxy S21",
                                      "price": "55000", "stockQty": 500}
    rows = list(catalog.parse_rows(SAMPLE.read_text()))
    assert all(isinstance(p, Product) for _, p in rows)
    assert len({p.product_id for _, p in rows}) == len(rows) >= 24
    assert cartstream("catalog", "load", str(SAMPLE), "--dry-run", config=cfg).exit_code == 0


def test_loaded_products_reach_redis_and_postgres_and_tombstones_delete(cfg, tmp_path) -> None:
    f = tmp_path / "catalog.jsonl"
    f.write_text(SAMPLE.read_text())
    assert cartstream("catalog", "load", str(f), config=cfg).exit_code == 0
    produce(cfg.kafka_bootstrap, cfg.topic_products, [(b"2", None)])  # delete product 2
    drain(cfg, "catalog")
    client = redis.Redis.from_url(cfg.redis_url)
    p1 = Product("1", "IPhone 12", Decimal("65000"), 768)
    assert client.hget(product_key("1", cfg.key_prefix), "doc") == encode_product(p1)
    assert not client.hexists(product_key("2", cfg.key_prefix), "doc")
    assert client.hexists(product_key("2", cfg.key_prefix), "offset")
    assert client.get(catalog_ready_key(cfg.key_prefix)) == b"1"
    n = len(SAMPLE.read_text().splitlines())
    with psycopg.connect(cfg.database_url) as conn:
        live = conn.execute("SELECT product_id, product_name, price, stock_qty FROM products "
                            "WHERE NOT deleted").fetchall()
        deleted = conn.execute("SELECT product_id FROM products WHERE deleted").fetchall()
    assert len(live) == n - 1 and ("1", "IPhone 12", Decimal("65000.00"), 768) in live
    assert deleted == [("2",)]


def test_the_console_producer_command_from_the_readme(cfg) -> None:
    lines = ('1:{"productId":"1","productName":"IPhone 12","price":"65000","stockQty":768}\n'
             '2:{"productId":"2","productName":"Samsung Galaxy S21","price":"55000",'
             '"stockQty":500}\n')
    subprocess.run([str(ROOT / "infra" / "kafka" / "bin" / "kafka-console-producer"),
                    "--topic", cfg.topic_products, "--bootstrap-server", cfg.kafka_bootstrap,
                    "--property", "parse.key=true", "--property", "key.separator=:"],
                   input=lines.encode(), check=True, timeout=120, capture_output=True)
    drain(cfg, "catalog")
    client = redis.Redis.from_url(cfg.redis_url)
    stored = decode_product(b"2", client.hget(product_key("2", cfg.key_prefix), "doc"))
    assert stored == Product("2", "Samsung Galaxy S21", Decimal("55000"), 500)


def test_a_redis_that_lost_the_catalog_gets_it_back_from_postgres(cfg, tmp_path) -> None:
    from connectors.service import build_sink

    f = tmp_path / "catalog.jsonl"
    f.write_text(SAMPLE.read_text())
    assert cartstream("catalog", "load", str(f), config=cfg).exit_code == 0
    produce(cfg.kafka_bootstrap, cfg.topic_products, [(b"2", None)])
    drain(cfg, "catalog")
    client = redis.Redis.from_url(cfg.redis_url)
    sink = build_sink("catalog", cfg)
    assert sink.restore_redis() is None  # nothing lost, nothing done
    # Redis restarted empty: the records are committed, so Kafka will not bring them back.
    client.delete(*client.keys(f"{cfg.key_prefix}*"))
    n = len(SAMPLE.read_text().splitlines())
    assert sink.restore_redis() == n
    assert decode_product(b"1", client.hget(product_key("1", cfg.key_prefix), "doc")) == Product(
        "1", "IPhone 12", Decimal("65000"), 768)
    assert not client.hexists(product_key("2", cfg.key_prefix), "doc")
    assert client.get(catalog_ready_key(cfg.key_prefix)) == b"1"
    # Only the marker lost: it comes back; the products, already there, are not rewritten.
    client.delete(catalog_ready_key(cfg.key_prefix))
    assert sink.restore_redis() == 0
    assert client.get(catalog_ready_key(cfg.key_prefix)) == b"1"
