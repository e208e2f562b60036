"""Versioned SQL migrations, applied at start by every process that owns the schema."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import psycopg

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant works; it only has to be the same for every process migrating this schema.
_LOCK_ID = 0x6361727473


def migrations() -> list[tuple[int, Path]]:
    """The migration files, ordered by their version number."""
    found = []
    for path in MIGRATIONS.glob("*.sql"):
        m = re.match(r"(\d+)_", path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def migrate(conn: psycopg.Connection) -> list[int]:
    """Apply pending migrations in one transaction under an advisory lock; return them."""
    applied: list[int] = []
    with conn.transaction():
        # Several sinks start together; the lock makes them take turns.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for version, path in migrations():
            if version in done:
                continue
            log.info("applying migration %s", path.name)
            conn.execute(path.read_text())
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            applied.append(version)
    return applied
