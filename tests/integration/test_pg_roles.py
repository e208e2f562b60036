"""The secure profile's PostgreSQL roles on a private cluster: scram only, least privilege."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest

from cart_contract import Product, encode_cart_details
from connectors.migrate import migrate
from connectors.records import ProductItem
from connectors.stores import upsert_cart_docs, upsert_products
from infra.pg_roles import (
    HBA,
    ROLES,
    SUPERUSER,
    configure,
    passwords,
    role_url,
    with_credentials,
    write_hba,
)
from tests.support.connectors import PrivatePostgres, cart

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not PrivatePostgres.available(), reason="needs PostgreSQL and root"),
]


@pytest.fixture(scope="module")
def secured(tmp_path_factory) -> Iterator[tuple[PrivatePostgres, dict[str, str], str]]:
    """A private cluster configured as the secure profile does: its base URL and secrets."""
    run_dir = tmp_path_factory.mktemp("pg-roles")
    secrets = passwords(run_dir)
    with PrivatePostgres() as pg:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "cartstream"')
        admin = with_credentials(pg.url, "postgres", secrets[SUPERUSER])
        configure(admin, "cartstream", secrets)  # under trust: the passwords get set
        write_hba(pg.data_dir, "secure")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        configure(admin, "cartstream", secrets)  # again, now under scram: idempotent
        yield pg, secrets, with_credentials(pg.url, "x", "x", "cartstream")


def connect(secured, kind: str) -> psycopg.Connection:
    _, secrets, base = secured
    return psycopg.connect(role_url(base, kind, secrets), autocommit=True)


def test_only_a_right_password_gets_in(secured) -> None:
    pg, secrets, base = secured
    assert "trust" not in HBA["secure"]
    assert "trust" not in (pg.data_dir / "pg_hba.conf").read_text()
    for url in (pg.url, with_credentials(base, ROLES["read"], "wrong"),
                with_credentials(base, "postgres", "wrong")):
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(url, connect_timeout=5).close()
    with psycopg.connect(with_credentials(base, "postgres", secrets[SUPERUSER])) as conn:
        method = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                              (ROLES["read"],)).fetchone()[0]
        assert method.startswith("SCRAM-SHA-256$")
        supers = conn.execute("SELECT rolname FROM pg_roles WHERE rolsuper AND rolname = ANY(%s)",
                              (list(ROLES.values()),)).fetchall()
        assert supers == []


def test_the_sinks_role_writes_rows_and_nothing_else(secured) -> None:
    with connect(secured, "sink") as conn:
        assert migrate(conn) == []  # nothing pending: the owner ran them
        c = cart("pg-acl-1", 1)
        with conn.transaction():
            assert upsert_cart_docs(conn, [(c, encode_cart_details(c))]) == 1
        c2 = cart("pg-acl-1", 2, qty=3)
        with conn.transaction():
            assert upsert_cart_docs(conn, [(c2, encode_cart_details(c2))]) == 1
        with conn.transaction():
            upsert_products(conn, [ProductItem("1", 3, Product("1", "IPhone 12",
                                                               Decimal("65000"), 5), None)])
        for statement in ("CREATE TABLE evil (x int)", "DROP TABLE carts",
                          "TRUNCATE carts", "DELETE FROM carts", "ALTER TABLE carts ADD x int",
                          "INSERT INTO schema_migrations (version) VALUES (999)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_the_read_apis_role_only_reads(secured) -> None:
    with connect(secured, "read") as conn:
        assert conn.execute("SELECT count(*) FROM carts").fetchone()[0] >= 0
        conn.execute("SELECT count(*) FROM cart_lines, products")
        for statement in ("UPDATE carts SET status = 'OPEN'", "DELETE FROM cart_lines",
                          "INSERT INTO products (product_id) VALUES ('x')",
                          "CREATE TABLE evil (x int)", "CREATE TEMP TABLE t (x int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_the_owner_owns_the_schema_and_ran_the_migrations(secured) -> None:
    with connect(secured, "owner") as conn:
        owners = {r[0] for r in conn.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")}
        assert owners == {ROLES["owner"]}
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] >= 2
