"""Connectors: schema migrations on empty, older and hand-made databases; concurrent starts."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import psycopg
import pytest

from connectors.migrate import MIGRATIONS, migrate, migrations
from tests.support.connectors import fresh_database

pytestmark = pytest.mark.integration

ALL = [v for v, _ in migrations()]


@pytest.fixture
def db(database_url: str, unique: str) -> str:
    return fresh_database(database_url, f"test_{unique}")


def schema(url: str) -> dict[str, list[tuple]]:
    """Tables -> (column, type, nullable), plus indexes: what the schema looks like."""
    with psycopg.connect(url) as conn:
        cols = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = 'public' ORDER BY 1, 2").fetchall()
        idx = conn.execute("SELECT tablename, indexdef FROM pg_indexes "
                           "WHERE schemaname = 'public' ORDER BY 1, 2").fetchall()
    out: dict[str, list[tuple]] = {}
    for table, *rest in cols:
        out.setdefault(table, []).append(tuple(rest))
    out["indexes"] = idx
    return out


def versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def test_the_migration_files_are_numbered_in_order() -> None:
    assert ALL == list(range(1, len(ALL) + 1)) and len(ALL) >= 2


def test_an_empty_database_gets_every_migration_once(db) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        assert migrate(conn) == ALL
        assert migrate(conn) == []
    assert versions(db) == ALL
    tables = schema(db)
    assert {"carts", "cart_lines", "products", "schema_migrations"} <= set(tables)
    # The store layout: product name, price and stock are nullable (tombstones of unknowns).
    assert ("product_name", "text", "YES") in tables["products"]


def test_an_older_database_is_brought_to_the_same_schema(db, database_url, unique,
                                                         tmp_path: Path) -> None:
    first = tmp_path / "first"
    first.mkdir()
    shutil.copy(MIGRATIONS / "0001_initial.sql", first)
    with psycopg.connect(db, autocommit=True) as conn:
        assert migrate(conn, first) == [1]
        conn.execute("INSERT INTO products VALUES ('1', 'Kept', 1, 1, false, 0, now())")
        assert migrate(conn) == ALL[1:]
        assert conn.execute("SELECT product_name FROM products").fetchone() == ("Kept",)
    reference = fresh_database(database_url, f"test_{unique}_ref")
    with psycopg.connect(reference, autocommit=True) as conn:
        migrate(conn)
    assert schema(db) == schema(reference)


def test_tables_made_before_schema_migrations_existed_are_adopted(db) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute((MIGRATIONS / "0001_initial.sql").read_text())
        conn.execute("INSERT INTO products VALUES ('1', 'Kept', 1, 1, false, 0, now())")
        assert migrate(conn) == ALL
        assert conn.execute("SELECT count(*) FROM products").fetchone() == (1,)


def test_concurrent_starts_take_turns(db) -> None:
    results: list[list[int]] = []
    errors: list[BaseException] = []
    go = threading.Barrier(6)

    def start() -> None:
        try:
            with psycopg.connect(db, autocommit=True) as conn:
                go.wait()
                results.append(migrate(conn))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [[]] * 5 + [ALL]


def test_a_failing_migration_changes_nothing(db, tmp_path: Path) -> None:
    for _, path in migrations():
        shutil.copy(path, tmp_path)
    (tmp_path / "0099_broken.sql").write_text(
        "CREATE TABLE half_done (x int);\nSELECT no_such_function();\n")
    with psycopg.connect(db, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedFunction):
            migrate(conn, tmp_path)
        assert conn.execute("SELECT to_regclass('carts'), to_regclass('half_done'), "
                            "to_regclass('schema_migrations')").fetchone() == (None, None, None)


@pytest.mark.parametrize("names", [["1_x.sql"], ["0001_a.sql", "0001_b.sql"], ["0001_Bad.sql"]])
def test_misnamed_or_duplicate_files_are_refused(tmp_path: Path, names: list[str]) -> None:
    for n in names:
        (tmp_path / n).write_text("SELECT 1;")
    with pytest.raises(ValueError):
        migrations(tmp_path)


@pytest.mark.parametrize("name", ["postgres", "catalog"])
def test_a_sink_migrates_at_start_before_any_record(
    kafka_bootstrap: str, redis_url: str, db: str, unique: str, name: str
) -> None:
    from connectors.consumer import Stopper
    from connectors.service import main
    from tests.support.connectors import private_config, wait_until

    cfg = private_config(kafka_bootstrap, redis_url, db, unique)
    stopper = Stopper()
    sink = threading.Thread(target=main, args=(name, cfg, stopper), daemon=True)
    sink.start()
    try:
        # The topic is empty: only the start itself can have created the tables.
        wait_until(lambda: "carts" in schema(db) and versions(db) == ALL, 30,
                   "the schema at start")
    finally:
        stopper.stop()
        sink.join(30)
    assert not sink.is_alive()
