"""Redis ACL users of the secure profile: each service only the commands and keys it needs.

The key patterns come from the store layout (cart_contract/layout.py) and REDIS_KEY_PREFIX,
the channel from CART_UPDATES_CHANNEL, so the ACLs follow the names instead of retyping them.
Redis checks the commands a Lua script calls too, so a script's HSET or PUBLISH needs the same
grant as a direct call. A client without a user and password gets nothing (NOAUTH).

The `default` user is not switched off but locked with a password of its own: Redis replays the
append-only file as `default`, and up to the fix of redis/redis#14541 (not in the Debian
7.0 package used here) it re-checks ACLs on each replayed MULTI/EXEC, which is how the scripts'
writes are logged, so with `default` off every cart and product would be dropped at restart.

    python -m infra.redis_acl aclfile PATH     # write the ACL file (0600) from $RUN_DIR/secrets
    python -m infra.redis_acl url SERVICE      # the REDIS_URL that SERVICE runs with
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlparse, urlunparse

from cart_contract.layout import (
    CART_KEY_PREFIX,
    CATALOG_READY_KEY,
    IDEMPOTENCY_KEY_PREFIX,
    PRODUCT_KEY_PREFIX,
    RATE_LIMIT_KEY_PREFIX,
    UPDATES_CHANNEL,
    WAITING_KEY_PREFIX,
)
from cart_contract.secrets import ensure_secret_file, read_secret_file, secrets_dir

# A script's SHA is loaded on first use (redis-py: EVALSHA, NOSCRIPT, then EVAL).
SCRIPTS = "+evalsha +eval +script|load +script|exists"
LIMITS = f"~{{p}}{RATE_LIMIT_KEY_PREFIX}* ~{{p}}{WAITING_KEY_PREFIX}* +incrby +expire +decrby"

# user -> its rules; {p} is REDIS_KEY_PREFIX, {c} the updates channel.
USERS: dict[str, str] = {
    # Catalog check (reads products), idempotency records (its own), rate limits.
    "write-api": f"%R~{{p}}{PRODUCT_KEY_PREFIX}* %R~{{p}}{CATALOG_READY_KEY} "
                 f"~{{p}}{IDEMPOTENCY_KEY_PREFIX}* {LIMITS} "
                 f"+get +set +del +exists +hexists +hget {SCRIPTS}",
    # Reads and pub/sub only (its re-warm of a cart after a Redis restart is refused and
    # logged; the sink writes the cart again), plus its rate-limit counters.
    "read-api": f"%R~{{p}}{CART_KEY_PREFIX}* %R~{{p}}{PRODUCT_KEY_PREFIX}* &{{c}} {LIMITS} "
                f"+hget +hmget +hgetall +get +exists +subscribe +unsubscribe",
    # Carts, compare-and-set in a script that also publishes.
    "sink-redis": f"~{{p}}{CART_KEY_PREFIX}* &{{c}} +hget +hset +publish {SCRIPTS}",
    # Products and the ready marker (restored from PostgreSQL after a Redis restart).
    "sink-catalog": f"~{{p}}{PRODUCT_KEY_PREFIX}* ~{{p}}{CATALOG_READY_KEY} "
                    f"+hget +hset +hdel +set +get +exists {SCRIPTS}",
    # Operators: replay, tests, redis-cli.
    "admin": "~* &* +@all",
}
# Which user each process runs as (processes without Redis have none).
SERVICE_USERS = {"write-api": "write-api", "read-api": "read-api", "sink-redis": "sink-redis",
                 "sink-catalog": "sink-catalog", "admin": "admin"}


def secret_name(user: str) -> str:
    """The secrets file of a Redis user's password."""
    return f"redis-{user}"


# Not a service's: the user Redis replays the append-only file as (see the module doc).
DEFAULT_USER = "default"


def passwords(run_dir: Path, create: bool = True) -> dict[str, str]:
    """Every Redis user's password, generated into $RUN_DIR/secrets if missing."""
    folder = secrets_dir(run_dir)
    read = ensure_secret_file if create else read_secret_file
    return {user: read(folder / secret_name(user)) for user in (DEFAULT_USER, *USERS)}


def render(passwords: Mapping[str, str], *, key_prefix: str = "",
           channel: str = UPDATES_CHANNEL) -> str:
    """The ACL file: `default` behind its own password, one line per user."""
    lines = [f"user {DEFAULT_USER} on #{_sha256(passwords[DEFAULT_USER])} resetkeys "
             "resetchannels ~* &* +@all"]
    for user, rules in USERS.items():
        grants = rules.replace("{p}", key_prefix).replace("{c}", channel)
        lines.append(f"user {user} on #{_sha256(passwords[user])} resetkeys resetchannels "
                     f"-@all +ping +auth +hello +select +client|setname +client|getname "
                     f"{grants}")
    return "\n".join(lines) + "\n"


def _sha256(password: str) -> str:
    # The file holds hashes, not the passwords (Redis accepts `#<sha256>`).
    import hashlib

    return hashlib.sha256(password.encode()).hexdigest()


def service_url(base_url: str, user: str, password: str) -> str:
    """`base_url` with the user's credentials."""
    parts = urlparse(base_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunparse(parts._replace(netloc=netloc))


def write_aclfile(path: Path, passwords: Mapping[str, str], **kw: str) -> None:
    """Write the ACL file, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(render(passwords, **kw))


def main(argv: list[str] | None = None) -> int:
    """Command line for infra/stack.sh."""
    parser = argparse.ArgumentParser(prog="python -m infra.redis_acl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("aclfile").add_argument("path", type=Path)
    sub.add_parser("url").add_argument("service", choices=sorted(SERVICE_USERS))
    args = parser.parse_args(argv)
    run_dir = Path(os.environ.get("RUN_DIR", ".run"))
    prefix = os.environ.get("REDIS_KEY_PREFIX", "")
    channel = os.environ.get("CART_UPDATES_CHANNEL", UPDATES_CHANNEL)
    secrets = passwords(run_dir)
    if args.cmd == "aclfile":
        write_aclfile(args.path, secrets, key_prefix=prefix, channel=channel)
        return 0
    user = SERVICE_USERS[args.service]
    base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    sys.stdout.write(service_url(base, user, secrets[user]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
