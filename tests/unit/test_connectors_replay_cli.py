"""Connectors: the replay command's arguments and summary (no servers)."""

from __future__ import annotations

from connectors import replay
from tests.support.cli import cartstream


def test_the_cli_help_and_argument_errors() -> None:
    result = cartstream("replay", "--help")
    out = result.stdout
    assert result.exit_code == 0 and "--from-events" in out and "Stop the sinks first" in out
    assert "Exit status" in out
    result = cartstream("replay", "--sinks", "redis,elastic")
    assert result.exit_code == 2 and "unknown sinks: elastic" in result.stderr


def test_the_summary_line() -> None:
    r = replay.ReplayResult("postgres", 1000, 600, 5, 2.0)
    assert r.rate == 500
    line = r.summary()
    assert "1,000 records" in line and "(      500/s)" in line
    assert "600 written, 395 already current or superseded, 5 dead-lettered" in line
    assert replay.ReplayResult("redis", 0, 0, 0, 0.0).rate == 0.0
