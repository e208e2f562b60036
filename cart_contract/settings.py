"""Settings every service shares: the base class, the shared variables and readable errors.

Each service has one `Settings` subclass whose fields name their environment variable
(`validation_alias`) and carry a `description`, from which docs/operations.md's table is made.
Building one (`Config(port=1)`) reads no environment, so tests get plain values;
`Config.from_env()` reads the process environment (or a mapping) once, at start.
"""

from __future__ import annotations

import os
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from cart_contract import topics
from cart_contract.layout import UPDATES_CHANNEL
from cart_contract.secrets import read_secret_file

ROOT = Path(__file__).resolve().parent.parent
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A bad setting; the message names the environment variable and what it accepts."""


def format_settings_error(exc: Exception) -> str:
    """The one line a service prints before exiting non-zero on bad settings."""
    return "bad configuration: " + " ".join(str(exc).split())


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Unset, empty and blank all mean "the default", as they always have here; surrounding
        # blanks (an editor's, a shell quote's) never mean anything.
        return {k: v.strip() for k, v in self._env.items() if v.strip()}


class Settings(BaseSettings):
    """Base of every service's settings: frozen, validated at construction, env on demand."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", validate_default=True, validate_by_name=True,
        validate_by_alias=True, case_sensitive=True, env_ignore_empty=True,
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(describe_errors(type(self), exc, values)) from None

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: Any,
                                   env_settings: Any, dotenv_settings: Any,
                                   file_secret_settings: Any) -> tuple[Any, ...]:
        # Only keyword arguments: the environment is read by from_env, explicitly, at start.
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """The settings from `env` (default: the process environment); ConfigError if bad."""
        return cls(**_Environment(cls, os.environ if env is None else env)())

    @classmethod
    def from_env_or_exit(cls) -> Self:
        """The settings at a service's start: bad ones print one line and exit with status 2."""
        try:
            return cls.from_env()
        except ConfigError as exc:
            print(format_settings_error(exc), file=sys.stderr)
            raise SystemExit(2) from None

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed, validated like the original."""
        return type(self)(**{**{n: getattr(self, n) for n in type(self).model_fields}, **changes})


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


LogLevel = Annotated[Literal[LOG_LEVELS], BeforeValidator(_upper)]  # type: ignore[valid-type]

# Variables several services read, each defined once: name, default, meaning.
KafkaBootstrap = Annotated[str, Field(
    "localhost:9092", validation_alias="KAFKA_BOOTSTRAP",
    description="Kafka bootstrap servers", json_schema_extra={"allowed": "host:port[,host:port…]"},
)]
TopicCartEvents = Annotated[str, Field(
    topics.CART_EVENTS, validation_alias="TOPIC_CART_EVENTS",
    description="the event store topic (write API writes, aggregator reads)",
)]
TopicProducts = Annotated[str, Field(
    topics.PRODUCT_DETAILS, validation_alias="TOPIC_PRODUCTS",
    description="the product catalog topic (catalog loader writes, aggregator and catalog sink "
                "read)",
)]
TopicCartDetails = Annotated[str, Field(
    topics.CART_DETAILS, validation_alias="TOPIC_CART_DETAILS",
    description="the carts topic (aggregator writes, Redis and PostgreSQL sinks read)",
)]
TopicCartReservations = Annotated[str, Field(
    topics.CART_RESERVATIONS, validation_alias="TOPIC_CART_RESERVATIONS",
    description="the stock decisions' request log, one partition (aggregator writes and reads)",
)]
TopicProductReservations = Annotated[str, Field(
    topics.PRODUCT_RESERVATIONS, validation_alias="TOPIC_PRODUCT_RESERVATIONS",
    description="reserved units per product, compacted (aggregator writes, catalog sink reads)",
)]
TopicDeadLetter = Annotated[str, Field(
    topics.DEAD_LETTER, validation_alias="TOPIC_DEAD_LETTER",
    description="where records that cannot be parsed go, with the reason",
)]
RedisUrl = Annotated[str, Field(
    "redis://127.0.0.1:6379/0", validation_alias="REDIS_URL",
    description="Redis: carts and catalog view (sinks write; read API and write API's catalog "
                "check read)", json_schema_extra={"allowed": "redis:// URL"},
)]
DatabaseUrl = Annotated[str, Field(
    "postgresql://cartstream@127.0.0.1:5432/cartstream", validation_alias="DATABASE_URL",
    description="PostgreSQL: carts and products (sinks write, read API reads)",
    json_schema_extra={"allowed": "postgresql:// URL"},
)]
RedisKeyPrefix = Annotated[str, Field(
    "", validation_alias="REDIS_KEY_PREFIX",
    description="prefix of every Redis key, so several systems (or tests) share one Redis",
)]
UpdatesChannel = Annotated[str, Field(
    UPDATES_CHANNEL, validation_alias="CART_UPDATES_CHANNEL",
    description="Redis pub/sub channel of stored carts (Redis sink publishes, read API's "
                "read-your-writes waits listen)",
)]
WritePort = Annotated[int, Field(
    8080, ge=0, le=65535, validation_alias="WRITE_PORT",
    description="the write API's HTTP port (the read API's cart page sends commands to it)",
)]
RunDir = Annotated[Path, Field(
    validation_alias="RUN_DIR",
    description="local state: logs, pids, server data, aggregator recovery",
)]
RecoveryDir = Annotated[Path | None, Field(
    None, validation_alias="AGG_RECOVERY_DIR",
    description="the aggregator's Bytewax recovery partitions (`replay --from events` deletes "
                "them)", json_schema_extra={"shown_default": "`$RUN_DIR/aggregator/recovery`"},
)]

KafkaSecurityProtocol = Annotated[Literal["PLAINTEXT", "SASL_PLAINTEXT"], Field(
    "PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL",
    description="how Kafka clients connect: PLAINTEXT (dev) or SASL_PLAINTEXT (secure: "
                "SCRAM-SHA-512 as KAFKA_SASL_USERNAME)",
)]
KafkaSaslMechanism = Annotated[Literal["SCRAM-SHA-512", "PLAIN"], Field(
    "SCRAM-SHA-512", validation_alias="KAFKA_SASL_MECHANISM",
    description="SASL mechanism (PLAIN only on the broker's loopback admin listener)",
)]
KafkaSaslUsername = Annotated[str, Field(
    "", validation_alias="KAFKA_SASL_USERNAME",
    description="the Kafka principal a process runs as (infra/kafka_acl.py)",
)]
KafkaSaslPassword = Annotated[SecretStr | None, Field(
    None, validation_alias="KAFKA_SASL_PASSWORD",
    description="that principal's password (else KAFKA_SASL_PASSWORD_FILE)",
)]
KafkaSaslPasswordFile = Annotated[Path | None, Field(
    None, validation_alias="KAFKA_SASL_PASSWORD_FILE",
    description="a file holding that principal's password (Docker secrets, `$RUN_DIR/secrets`)",
)]


def client_config(kafka: str | Mapping[str, Any]) -> dict[str, Any]:
    """librdkafka settings from bootstrap servers alone (PLAINTEXT) or a `kafka_client()`."""
    if isinstance(kafka, str):
        return {"bootstrap.servers": kafka}
    return dict(kafka)


class KafkaClientSettings(Settings):
    """The Kafka connection every client builds its configuration from (`kafka_client`)."""

    kafka_bootstrap: KafkaBootstrap
    kafka_security_protocol: KafkaSecurityProtocol
    kafka_sasl_mechanism: KafkaSaslMechanism
    kafka_sasl_username: KafkaSaslUsername
    kafka_sasl_password: KafkaSaslPassword
    kafka_sasl_password_file: KafkaSaslPasswordFile

    @model_validator(mode="after")
    def _sasl_complete(self) -> Self:
        if self.kafka_security_protocol == "SASL_PLAINTEXT" and not (
                self.kafka_sasl_username and (self.kafka_sasl_password is not None
                                              or self.kafka_sasl_password_file is not None)):
            raise ValueError("KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT needs KAFKA_SASL_USERNAME "
                             "and KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE")
        return self

    def kafka_client(self) -> dict[str, Any]:
        """librdkafka settings: bootstrap servers and, when SASL, the principal's credentials.

        The password file is read here, at each client's creation, never logged.
        """
        conf: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap}
        if self.kafka_security_protocol == "SASL_PLAINTEXT":
            password = (self.kafka_sasl_password.get_secret_value()
                        if self.kafka_sasl_password is not None
                        else read_secret_file(self.kafka_sasl_password_file))  # type: ignore[arg-type]
            conf.update({"security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": self.kafka_sasl_mechanism,
                         "sasl.username": self.kafka_sasl_username,
                         "sasl.password": password})
        return conf


# ------------------------------------------------------------------ errors and documentation


def variables(field: FieldInfo) -> list[str]:
    """The environment variables of a field, the preferred one first."""
    alias = field.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str)]
    return []


def _bounds(field: FieldInfo) -> str:
    found = []
    for m in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(m, attr, None)
            if value is not None:
                found.append(f"{sign} {value}")
    return " and ".join(found)


def allowed(field: FieldInfo) -> str:
    """What a field accepts, in words ("an integer >= 1", "one of DEBUG, INFO, …")."""
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "allowed" in extra:
        return str(extra["allowed"])
    kind = field.annotation
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType)
    if optional:
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is Literal:
        text = "one of " + ", ".join(str(a) for a in typing.get_args(kind))
    elif kind is bool:
        text = "a boolean (true/false, 1/0, yes/no, on/off)"
    elif kind in (int, float):
        text = "an integer" if kind is int else "a number"
        bounds = _bounds(field)
        text += f" {bounds}" if bounds else ""
    elif kind is Path:
        text = "a path"
    else:
        text = "any text"
    return f"{text}, or unset" if optional else text


def describe_errors(cls: type[Settings], exc: ValidationError, given: Mapping[str, Any]) -> str:
    """Pydantic's errors in terms of environment variables: `X must be …, got '…'`.

    `given` are the values as passed in: what the error shows, before any normalising.
    """
    by_name = {n: f for n, f in cls.model_fields.items()}
    by_var = {v: f for f in cls.model_fields.values() for v in variables(f)}
    lines = []
    for err in exc.errors():
        where = err["loc"][0] if err["loc"] else None
        field = by_name.get(str(where)) or by_var.get(str(where))
        if field is None:  # a check across fields, or an unknown keyword
            reason = err.get("ctx", {}).get("error", err["msg"])
            lines.append(f"{where}: {reason}" if where else str(reason))
            continue
        name = str(where) if str(where) in by_var else (variables(field) or [str(where)])[0]
        if err["type"] == "value_error":
            lines.append(f"{name}: {err['ctx']['error']}")
        else:
            shown = given.get(str(where), err["input"])
            lines.append(f"{name} must be {allowed(field)}, got {shown!r}")
    return "; ".join(lines)


def _shown_default(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "shown_default" in extra:
        return str(extra["shown_default"])
    value = field.default
    if value is None:
        return "unset"
    if value == "" or value == ():
        return "empty"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, Path) and value.is_absolute() and value.is_relative_to(ROOT):
        return f"`<repository>/{value.relative_to(ROOT)}`"
    return f"`{value}`"


def settings_table(services: Sequence[tuple[str, type[Settings]]]) -> str:
    """docs/operations.md's configuration table: one row per variable, whoever reads it.

    A variable several services read shows once; where their defaults differ, each is named.
    """
    rows: dict[str, dict[str, Any]] = {}
    for service, cls in services:
        for field in cls.model_fields.values():
            names = variables(field)
            if not names:
                continue
            row = rows.setdefault(names[0], {"also": [], "defaults": {}, "users": [],
                                             "allowed": allowed(field),
                                             "meaning": field.description or ""})
            row["users"].append(service)
            row["also"] += [f"`{n}` ({service})" for n in names[1:]]
            row["defaults"].setdefault(_shown_default(field), []).append(service)
    # Shared variables first, then each service's own, in declaration order.
    lines = ["| variable | default | allowed | used by | meaning |", "|---|---|---|---|---|"]
    for name, r in sorted(rows.items(), key=lambda item: len(item[1]["users"]) == 1):
        variable = f"`{name}`" + (f", also {', '.join(r['also'])}" if r["also"] else "")
        defaults = r["defaults"]
        default = next(iter(defaults)) if len(defaults) == 1 else "; ".join(
            f"{d} ({', '.join(users)})" for d, users in defaults.items())
        cells = [variable, default, r["allowed"], ", ".join(r["users"]), r["meaning"]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
