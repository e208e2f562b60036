"""Run `cartstream` subcommands in-process, with a given Config instead of the environment."""

from __future__ import annotations

from collections.abc import Mapping

from typer.testing import CliRunner, Result

from cartstream.cli import app


def cartstream(*args: str, config: object = None, env: Mapping[str, str] | None = None
               ) -> Result:
    """`cartstream ARGS…`; `config` replaces the settings the subcommand reads from the
    environment, `env` sets variables for the call."""
    return CliRunner().invoke(app, list(args), env=env, obj=config, catch_exceptions=False,
                              prog_name="cartstream")
