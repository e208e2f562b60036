"""Versioned SQL migrations (connectors/migrations/NNNN_name.sql), applied at start.

    cartstream migrate          # apply what is pending to $DATABASE_URL, then exit

Every sink that writes PostgreSQL calls `migrate` when it connects. All pending files run in one
transaction under an advisory lock, so sinks starting together take turns and a failing file
leaves the schema as it was. Files are written to be idempotent (IF NOT EXISTS …), so a database
whose tables predate `schema_migrations` also ends up on the current schema.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import psycopg

from cart_contract.layout import MIGRATIONS_TABLE

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant works; it only has to be the same for every process migrating this schema.
_LOCK_ID = 0x6361727473
_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


def migrations(directory: Path = MIGRATIONS) -> list[tuple[int, Path]]:
    """The migration files, ordered by version; raises on a misnamed or duplicate file."""
    found: dict[int, Path] = {}
    for path in directory.glob("*.sql"):
        m = _NAME.fullmatch(path.name)
        if not m:
            raise ValueError(f"migration {path.name} is not named NNNN_lower_snake.sql")
        version = int(m.group(1))
        if version in found:
            raise ValueError(f"migrations {found[version].name} and {path.name} share a version")
        found[version] = path
    return sorted(found.items())


def migrate(conn: psycopg.Connection, directory: Path = MIGRATIONS) -> list[int]:
    """Apply pending migrations in one transaction under an advisory lock; return them."""
    pending = migrations(directory)
    applied: list[int] = []
    with conn.transaction():
        # Several sinks start together; the lock makes them take turns.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        # Only when missing: a role that may not create tables (the secure profile's sinks)
        # is refused even CREATE TABLE IF NOT EXISTS of a table that exists.
        if conn.execute("SELECT to_regclass(%s)", (MIGRATIONS_TABLE,)).fetchone()[0] is None:
            conn.execute(
                f"CREATE TABLE {MIGRATIONS_TABLE} "
                "(version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        done = {r[0] for r in conn.execute(f"SELECT version FROM {MIGRATIONS_TABLE}")}
        for version, path in pending:
            if version in done:
                continue
            log.info("applying migration %s", path.name)
            conn.execute(path.read_text())
            conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} (version) VALUES (%s)", (version,))
            applied.append(version)
    return applied


def migrate_url(url: str) -> tuple[list[int], int | None]:
    """Apply what is pending to the database at `url`; return (applied, schema version)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        applied = migrate(conn)
        current = conn.execute(f"SELECT max(version) FROM {MIGRATIONS_TABLE}").fetchone()[0]
    return applied, current
