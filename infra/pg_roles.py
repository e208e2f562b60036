"""PostgreSQL roles of the secure profile: scram-sha-256 passwords, least privilege.

- `cartstream_owner` owns the database, its schema and tables, and runs the migrations;
- `cartstream_sink` (sink-postgres, sink-catalog, sink-reservations) reads and writes the rows
  of the tables it fills: SELECT, INSERT, UPDATE, and DELETE on `cart_lines` (a cart's lines
  are replaced);
- `cartstream_read` (read API) may only SELECT;
- the bootstrap superuser gets a password and is used by nobody but this module.
Passwords live in `$RUN_DIR/secrets/pg-*` (0600). pg_hba.conf has no trust line in the secure
profile; the dev profile gets initdb's trust lines back (loopback only), so data survive both.

    python -m infra.pg_roles hba dev|secure DATA_DIR   # write DATA_DIR/pg_hba.conf
    python -m infra.pg_roles configure                  # roles, ownership, migrations, grants
    python -m infra.pg_roles url owner|sink|read        # the DATABASE_URL of that role
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlparse, urlunparse

import psycopg
from psycopg import sql

from cart_contract.layout import (
    CART_LINES_TABLE,
    CARTS_TABLE,
    CUSTOMERS_TABLE,
    MIGRATIONS_TABLE,
    PRODUCT_RESERVATIONS_TABLE,
    PRODUCTS_TABLE,
)
from cart_contract.secrets import ensure_secret_file, read_secret_file, secrets_dir

ROLES = {"owner": "cartstream_owner", "sink": "cartstream_sink", "read": "cartstream_read"}
SUPERUSER = "superuser"  # the secret of the bootstrap superuser's password
KINDS = (SUPERUSER, *ROLES)
# Which role each process connects as.
SERVICE_ROLES = {"sink-postgres": "sink", "sink-catalog": "sink", "sink-reservations": "sink",
                 "read-api": "read",
                 "migrate": "owner", "replay": "owner"}

HBA = {
    "secure": ("local all all scram-sha-256\n"
               "host all all 127.0.0.1/32 scram-sha-256\n"
               "host all all ::1/128 scram-sha-256\n"),
    # What initdb --auth=trust writes: a developer's stack, reachable from this machine only.
    "dev": ("local all all trust\n"
            "host all all 127.0.0.1/32 trust\n"
            "host all all ::1/128 trust\n"),
}


def secret_name(kind: str) -> str:
    """The secrets file of a role's password."""
    return f"pg-{kind}"


def passwords(run_dir: Path, create: bool = True) -> dict[str, str]:
    """Every role's password (and the superuser's), generated if missing."""
    read = ensure_secret_file if create else read_secret_file
    return {kind: read(secrets_dir(run_dir) / secret_name(kind)) for kind in KINDS}


def with_credentials(url: str, user: str, password: str, database: str | None = None) -> str:
    """`url` as `user` with `password` (and on `database`, if given)."""
    parts = urlparse(url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname or '127.0.0.1'}"
    if parts.port:
        netloc += f":{parts.port}"
    parts = parts._replace(netloc=netloc)
    if database is not None:
        parts = parts._replace(path=f"/{database}")
    return urlunparse(parts)


def role_url(url: str, kind: str, secrets: Mapping[str, str]) -> str:
    """The URL a role connects with."""
    return with_credentials(url, ROLES[kind], secrets[kind])


def write_hba(data_dir: Path, profile: str) -> None:
    """Replace pg_hba.conf with the profile's rules (reload or restart to apply)."""
    path = data_dir / "pg_hba.conf"
    path.write_text(HBA[profile])


def configure_roles(conn: psycopg.Connection, database: str, superuser: str,
                    secrets: Mapping[str, str]) -> None:
    """As the superuser: passwords (scram), the three roles, ownership of database and schema."""
    conn.execute("SET password_encryption = 'scram-sha-256'")
    conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
        sql.Identifier(superuser), sql.Literal(secrets[SUPERUSER])))
    for kind, role in ROLES.items():
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
                             "PASSWORD {}").format(sql.Identifier(role),
                                                   sql.Literal(secrets[kind])))
    owner, sink, read = (sql.Identifier(ROLES[k]) for k in ("owner", "sink", "read"))
    db = sql.Identifier(database)
    conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, owner))
    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}, {}").format(db, sink, read))
    # The sinks stage batches in temporary tables (connectors/stores.py).
    conn.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(db, sink))


def configure_schema(conn: psycopg.Connection) -> None:
    """In the database, as the superuser: the owner owns the schema and every table in it."""
    owner, sink, read = (sql.Identifier(ROLES[k]) for k in ("owner", "sink", "read"))
    conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(owner))
    conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}, {}").format(sink, read))
    tables = [r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    for table in tables:
        conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table), owner))


def grant_tables(conn: psycopg.Connection) -> None:
    """After the migrations: each role's rights on the tables (none beyond these)."""
    sink, read = sql.Identifier(ROLES["sink"]), sql.Identifier(ROLES["read"])
    data = [sql.Identifier(t)
            for t in (CUSTOMERS_TABLE, CARTS_TABLE, CART_LINES_TABLE, PRODUCTS_TABLE,
                      PRODUCT_RESERVATIONS_TABLE)]
    for table in data:
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON {} TO {}").format(table, sink))
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(table, read))
    conn.execute(sql.SQL("GRANT DELETE ON {} TO {}").format(
        sql.Identifier(CART_LINES_TABLE), sink))
    # The sinks check at start that no migration is pending (connectors.migrate).
    conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(
        sql.Identifier(MIGRATIONS_TABLE), sink))


def configure(admin_url: str, database: str, secrets: Mapping[str, str]) -> None:
    """Everything, idempotently: roles, ownership, the migrations as the owner, the grants."""
    from connectors.migrate import migrate_url

    superuser = urlparse(admin_url).username or "postgres"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as conn:
        configure_roles(conn, database, superuser, secrets)
    db_admin = with_credentials(admin_url, superuser, secrets[SUPERUSER], database)
    with psycopg.connect(db_admin, autocommit=True, connect_timeout=10) as conn:
        configure_schema(conn)
    migrate_url(with_credentials(admin_url, ROLES["owner"], secrets["owner"], database))
    with psycopg.connect(db_admin, autocommit=True, connect_timeout=10) as conn:
        grant_tables(conn)


def main(argv: list[str] | None = None) -> int:
    """Command line for infra/stack.sh (reads RUN_DIR, DATABASE_URL, PG_DB)."""
    parser = argparse.ArgumentParser(prog="python -m infra.pg_roles", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    hba = sub.add_parser("hba")
    hba.add_argument("profile", choices=sorted(HBA))
    hba.add_argument("data_dir", type=Path)
    sub.add_parser("configure")
    sub.add_parser("url").add_argument("service", choices=sorted(SERVICE_ROLES))
    args = parser.parse_args(argv)
    if args.cmd == "hba":
        write_hba(args.data_dir, args.profile)
        return 0
    run_dir = Path(os.environ.get("RUN_DIR", ".run"))
    url = os.environ.get("DATABASE_URL", "postgresql://cartstream@127.0.0.1:5432/cartstream")
    secrets = passwords(run_dir)
    if args.cmd == "configure":
        database = os.environ.get("PG_DB") or urlparse(url).path.lstrip("/") or "cartstream"
        superuser = urlparse(url).username or "postgres"
        # Trust (dev) ignores the password; scram (secure, already configured) needs it.
        configure(with_credentials(url, superuser, secrets[SUPERUSER], "postgres"), database,
                  secrets)
        return 0
    sys.stdout.write(role_url(url, SERVICE_ROLES[args.service], secrets) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
