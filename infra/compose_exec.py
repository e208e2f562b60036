"""compose.yaml's service launcher: a service's store URLs from its Docker secrets, then exec.

The official images take secrets as files (`*_FILE`); our services take Redis and PostgreSQL
credentials in their URLs (REDIS_URL, DATABASE_URL) and Kafka's as KAFKA_SASL_PASSWORD_FILE.
This puts the process's own Redis user (infra/redis_acl.py) and PostgreSQL role
(infra/pg_roles.py) into its URLs, reading only those two secret files, then replaces itself
with the command. The passwords never appear in compose.yaml nor in a log.

    python -m infra.compose_exec SERVICE COMMAND [ARGS...]   # secrets in $SECRETS_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cart_contract.secrets import read_secret_file
from infra import pg_roles, redis_acl


def service_env(service: str, env: dict[str, str], secrets: Path) -> dict[str, str]:
    """`env` with SERVICE's REDIS_URL and DATABASE_URL carrying its own credentials."""
    out = dict(env)
    user = redis_acl.SERVICE_USERS.get(service)
    if user is not None:
        password = read_secret_file(secrets / redis_acl.secret_name(user))
        out["REDIS_URL"] = redis_acl.service_url(env["REDIS_URL"], user, password)
    kind = pg_roles.SERVICE_ROLES.get(service)
    if kind is not None:
        password = read_secret_file(secrets / pg_roles.secret_name(kind))
        out["DATABASE_URL"] = pg_roles.with_credentials(env["DATABASE_URL"],
                                                        pg_roles.ROLES[kind], password)
    return out


def main(argv: list[str] | None = None) -> None:
    """Exec the command with the service's credentials."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        sys.exit("usage: python -m infra.compose_exec SERVICE COMMAND [ARGS...]")
    service, command = args[0], args[1:]
    secrets = Path(os.environ.get("SECRETS_DIR", "/run/secrets"))
    os.execvpe(command[0], command, service_env(service, dict(os.environ), secrets))


if __name__ == "__main__":
    main()
