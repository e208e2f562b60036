"""Every service's settings: variables documented, defaults the local stack's, bad values named."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from cart_contract.settings import ConfigError, Settings, format_settings_error, variables
from infra.settings_doc import DOC, SERVICES, render

ROOT = Path(__file__).resolve().parents[2]
CLASSES = [cls for _, cls in SERVICES]


def every_field() -> list[tuple[type[Settings], str, Any]]:
    return [(cls, name, field) for cls in CLASSES for name, field in cls.model_fields.items()]


def test_the_docs_table_is_the_one_the_classes_make() -> None:
    text = DOC.read_text()
    assert render(text) == text, "docs/operations.md is stale: run python -m infra.settings_doc"


@pytest.mark.parametrize(("cls", "name", "field"), every_field(),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_setting_has_a_variable_a_meaning_and_a_row(cls: type[Settings], name: str,
                                                          field: Any) -> None:
    assert variables(field), f"{cls.__module__}.{name} has no environment variable"
    assert field.description, f"{cls.__module__}.{name} has no description"
    assert f"| `{variables(field)[0]}`" in DOC.read_text()


def stack_defaults() -> dict[str, str]:
    """infra/defaults.env as the shell would read it with nothing set."""
    found: dict[str, str] = {}
    for line in (ROOT / "infra" / "defaults.env").read_text().splitlines():
        m = re.fullmatch(r': "\$\{(\w+):=(.*)\}"', line.strip())
        if m:
            found[m[1]] = re.sub(r"\$\{(\w+)\}", lambda v: found[v[1]], m[2])
    return found


def test_defaults_are_the_local_stacks() -> None:
    stack = stack_defaults()
    compared = set()
    for cls, name, field in every_field():
        for var in variables(field):
            if var in stack:
                assert str(getattr(cls(), name)) == stack[var], (cls.__module__, var)
                compared.add(var)
    assert {"KAFKA_BOOTSTRAP", "REDIS_URL", "DATABASE_URL", "WRITE_PORT", "READ_PORT",
            "TOPIC_CART_EVENTS", "CART_EVENTS_PARTITIONS"} <= compared


def test_the_environment_unset_empty_or_blank_means_the_defaults() -> None:
    for cls in CLASSES:
        names = {v for f in cls.model_fields.values() for v in variables(f)}
        assert cls.from_env({}) == cls() == cls.from_env(dict.fromkeys(names, "")) \
            == cls.from_env(dict.fromkeys(names, "  "))


def bad_values(field: Any) -> list[str]:
    kind = field.annotation
    if typing.get_origin(kind) in (typing.Union, type(int | None)):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if kind is bool or typing.get_origin(kind) is typing.Literal:
        return ["maybe"]
    if kind not in (int, float):
        return []
    values = ["lots"]
    for m in field.metadata:
        if getattr(m, "ge", None) is not None:
            values.append(str(m.ge - 1))
        if getattr(m, "gt", None) is not None:
            values.append(str(m.gt))
        if getattr(m, "le", None) is not None:
            values.append(str(m.le + 1))
    return values


BAD = [(cls, var, value) for cls, _, field in every_field() for var in variables(field)
       for value in bad_values(field)]


@pytest.mark.parametrize(("cls", "var", "value"), BAD, ids=lambda v: v if isinstance(v, str)
                         else "")
def test_a_bad_value_names_its_variable_and_what_it_accepts(cls: type[Settings], var: str,
                                                            value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        cls.from_env({var: value})
    assert str(caught.value).startswith(f"{var} must be ")
    assert str(caught.value).endswith(f"got {value!r}")


def test_messages_say_what_is_allowed() -> None:
    from cart_aggregator.config import Config as Aggregator
    from cart_write.config import Config as Write

    def message(env: dict[str, str]) -> str:
        with pytest.raises(ConfigError) as caught:
            Write.from_env(env)
        return str(caught.value)

    assert message({"WRITE_LOG_LEVEL": "loud"}) == (
        "WRITE_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'")
    assert message({"WRITE_WORKERS": "0", "WRITE_PORT": "http"}) == (
        "WRITE_PORT must be an integer >= 0 and <= 65535, got 'http'; "
        "WRITE_WORKERS must be an integer >= 1, got '0'")
    with pytest.raises(ConfigError, match="^AGG_WORKERS must be an integer >= 1, got 0$"):
        Aggregator(workers=0)  # built in code: still named by its variable
    with pytest.raises(ConfigError, match="kafka_client"):
        Write(kafka_client="kafka-python")  # gone: an unknown setting is an error


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("ON", True), (" no ", False),
                                            ("False", False), ("yes", True), ("off", False)])
def test_booleans_take_the_usual_spellings(raw: str, value: bool) -> None:
    from cart_aggregator.config import Config

    assert Config.from_env({"AGG_RECOVERY": raw}).recovery is value


def test_replace_validates_like_construction() -> None:
    from connectors.config import Config

    cfg = Config().replace(batch_max=7, batch_wait_ms=50)
    assert (cfg.batch_max, cfg.batch_wait_s, Config().batch_max) == (7, 0.05, 5000)
    with pytest.raises(ConfigError, match="SINK_BATCH_MAX"):
        cfg.replace(batch_max=0)


def test_a_bad_setting_is_one_line_and_exit_status_2(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from cart_read.config import Config

    monkeypatch.setenv("READ_WORKERS", "0")
    with pytest.raises(SystemExit) as caught:
        Config.from_env_or_exit()
    assert caught.value.code == 2
    assert capsys.readouterr().err == (
        "bad configuration: READ_WORKERS must be an integer >= 1, got '0'\n")
    assert format_settings_error(ValueError("a\n  b")) == "bad configuration: a b"


@pytest.mark.parametrize(("command", "env"), [
    (["serve", "write"], {"WRITE_KAFKA_REQUEST_TIMEOUT_MS": "99"}),
    (["serve", "read"], {"READ_LOG_LEVEL": "LOUD"}),
    (["aggregate"], {"AGG_RECOVERY": "maybe"}),
    (["migrate"], {"SINK_BATCH_MAX": "0"}),
    (["sink", "redis"], {"SINK_BATCH_MAX": "0"}),
    (["topics"], {"PRODUCTS_PARTITIONS": "none"}),
])
def test_services_stop_with_one_line_naming_the_variable(command: list[str],
                                                         env: dict[str, str]) -> None:
    import os

    done = subprocess.run([sys.executable, "-m", "cartstream", *command], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    (var,) = env
    assert done.returncode == 2
    assert done.stderr.startswith(f"cartstream: bad configuration: {var} must be "), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
