"""The store layout: defined once (cart_contract.layout), used by writers and readers alike."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cart_contract import layout

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("cart_contract", "cart_read", "cart_write", "cart_web", "connectors",
                    "cart_aggregator")

# Who writes and who reads each name of the layout (modules that import it from layout).
# A new name must be entered here: that is the point of the test.
USERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "UPDATES_CHANNEL": (("connectors/sinks.py", "cart_contract/redis_carts.py"),
                        ("cart_read/waiters.py",)),
    "CART_VERSION_FIELD": (("cart_contract/redis_carts.py",), ("cart_read/queries.py",)),
    "CART_DOC_FIELD": (("cart_contract/redis_carts.py",), ("cart_read/queries.py",)),
    "cart_key": (("cart_contract/redis_carts.py",), ("cart_read/queries.py",)),
    "PRODUCT_DOC_FIELD": (("connectors/stores.py",), ("cart_write/catalog.py",)),
    "product_key": (("connectors/stores.py",), ("cart_write/catalog.py",)),
    "catalog_ready_key": (("connectors/stores.py",), ("cart_write/catalog.py",
                                                      "connectors/sinks.py")),
    # The write API is the only writer and reader of its idempotency records.
    "idempotency_key": (("cart_write/idempotency.py",), ()),
    "IDEMPOTENCY_KEY_PREFIX": ((), ()),
    # The secure profile's limits: counted and read back by the same module.
    "rate_limit_key": (("cart_web/ratelimit.py",), ()),
    "waiting_key": (("cart_web/ratelimit.py",), ()),
    "RATE_LIMIT_KEY_PREFIX": ((), ()),
    "WAITING_KEY_PREFIX": ((), ()),
    # The read API issues event-stream tickets and redeems them.
    "stream_ticket_key": (("cart_read/tickets.py",), ()),
    "STREAM_TICKET_KEY_PREFIX": ((), ()),
    "CARTS_TABLE": (("connectors/stores.py",), ("cart_read/queries.py",)),
    "CUSTOMERS_TABLE": (("connectors/stores.py",), ("cart_read/queries.py",)),
    "CART_LINES_TABLE": (("connectors/stores.py",), ("cart_read/queries.py",)),
    "PRODUCTS_TABLE": (("connectors/stores.py",), ("cart_read/queries.py",)),
    "PRODUCT_RESERVATIONS_TABLE": (("connectors/stores.py",), ("cart_read/queries.py",)),
    # Only the writer reads these back: the offset guards a product's compare-and-set, and
    # the migrations table is the migration runner's own bookkeeping.
    "PRODUCT_OFFSET_FIELD": (("connectors/stores.py",), ()),
    "MIGRATIONS_TABLE": (("connectors/migrate.py",), ()),
    # Parts of the keys: everyone goes through the key functions above (layout uses them).
    "CART_KEY_PREFIX": ((), ()),
    "PRODUCT_KEY_PREFIX": ((), ()),
    "CATALOG_READY_KEY": ((), ()),
}


def _public_names() -> set[str]:
    return {n for n in vars(layout) if not n.startswith("_") and n != "annotations"}


def _layout_imports(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    return {alias.name for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "cart_contract.layout"
            for alias in node.names}


def test_the_values_are_what_stored_data_already_uses() -> None:
    # Changing any of these makes existing Redis keys or PostgreSQL tables unreadable.
    assert layout.cart_key("123") == "cart:123"
    assert layout.cart_key("123", "t1:") == "t1:cart:123"
    assert layout.product_key("7", "t1:") == "t1:product:7"
    assert layout.catalog_ready_key() == "catalog:ready"
    assert layout.idempotency_key("k-1", "t1:") == "t1:idempotency:k-1"
    assert layout.catalog_ready_key("t1:") == "t1:catalog:ready"
    assert layout.rate_limit_key("commands", "123", 7, "t1:") == "t1:ratelimit:commands:123:7"
    assert layout.waiting_key("123", "t1:") == "t1:waiting:123"
    assert layout.UPDATES_CHANNEL == "cartstream:cart-updated"
    assert (layout.CART_VERSION_FIELD, layout.CART_DOC_FIELD) == ("v", "doc")
    assert (layout.PRODUCT_OFFSET_FIELD, layout.PRODUCT_DOC_FIELD) == ("offset", "doc")
    assert (layout.CARTS_TABLE, layout.CART_LINES_TABLE, layout.PRODUCTS_TABLE,
            layout.MIGRATIONS_TABLE) == ("carts", "cart_lines", "products", "schema_migrations")


def test_every_layout_name_says_who_writes_and_who_reads_it() -> None:
    assert _public_names() == set(USERS)


@pytest.mark.parametrize("name", sorted(USERS))
def test_writers_and_readers_take_the_name_from_layout(name: str) -> None:
    writers, readers = USERS[name]
    for path in (*writers, *readers):
        assert name in _layout_imports(path), f"{path} does not use layout.{name}"


def test_the_migrations_create_the_tables_the_layout_names() -> None:
    sql = " ".join(p.read_text() for p in (ROOT / "connectors" / "migrations").glob("*.sql"))
    for table in (layout.CARTS_TABLE, layout.CART_LINES_TABLE, layout.PRODUCTS_TABLE,
                  layout.CUSTOMERS_TABLE):
        assert f"CREATE TABLE IF NOT EXISTS {table} (" in sql


# String literals that spell a layout name instead of importing it.
_SPELLED = re.compile(
    r"cartstream:cart-updated|catalog:ready|(?:^|})(cart|product|idempotency):"
    r"|\b(FROM|INTO|JOIN|TABLE|UPDATE|COPY)\s+(carts|cart_lines|products|schema_migrations)\b")
_SETTINGS: set[str] = set()


def _string_literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def test_no_product_module_spells_a_layout_name() -> None:
    found = []
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "cart_contract/layout.py" or rel in _SETTINGS:
                continue
            found += [f"{rel}:{line}: {text!r}" for line, text in _string_literals(path)
                      if _SPELLED.search(text)]
    assert found == []


def test_the_settings_default_to_the_layout_channel() -> None:
    from cart_read.config import Config as ReadConfig
    from connectors.config import Config as SinkConfig

    assert ReadConfig().notify_channel == layout.UPDATES_CHANNEL
    assert SinkConfig().updates_channel == layout.UPDATES_CHANNEL


def test_importing_the_read_api_never_imports_the_connectors() -> None:
    # A fresh interpreter: this test process has imported connectors already.
    code = ("import sys, cart_read.app, cart_read.queries, cart_read.fast, cart_read.waiters, "
            "cart_read.openapi, cart_read.params, cart_read.stores\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'connectors'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()
    assert out == "[]"


def test_the_read_api_sources_never_import_the_connectors() -> None:
    for path in (ROOT / "cart_read").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [m for m in modules if m.split(".")[0] == "connectors"], path
