"""Secrets of the secure profile: generated once into `$RUN_DIR/secrets/`, read from a file.

A secret reaches a service either in its variable (`JWT_SECRET`) or, the convention of the
official Redis/PostgreSQL images and of Docker secrets, as a file named by `<VARIABLE>_FILE`.
Generated files are mode 0600 in a 0700 directory. Values are never logged: settings hold them
as pydantic `SecretStr`, whose repr is masked.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRETS_DIR = "secrets"  # under RUN_DIR
JWT_SECRET_NAME = "jwt-hs256"  # the local HS256 signing key of the APIs' bearer tokens


def secrets_dir(run_dir: Path) -> Path:
    """Where a stack keeps its generated secrets."""
    return run_dir / SECRETS_DIR


def read_secret_file(path: Path) -> str:
    """A secret file's value, without the trailing newline editors and `echo` add."""
    value = path.read_text().rstrip("\r\n")
    if not value:
        raise ValueError(f"secret file {path} is empty")
    return value


def ensure_secret_file(path: Path, nbytes: int = 32) -> str:
    """The secret in `path`, generated (random, mode 0600) if the file does not exist yet.

    Several processes may start at once (granian workers, both APIs): each writes its own
    temporary file and links it into place, so exactly one value wins and nobody reads a
    half-written file.
    """
    if path.exists():
        return read_secret_file(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(nbytes) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race: use its value
    finally:
        tmp.unlink(missing_ok=True)
    return read_secret_file(path)


def redact_url(url: str) -> str:
    """A URL fit for logs: its password, if any, replaced by `***`."""
    from urllib.parse import urlparse, urlunparse

    parts = urlparse(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunparse(parts._replace(netloc=netloc))
