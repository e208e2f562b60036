"""Connectors: the replay command's arguments and summary (no servers)."""

from __future__ import annotations

import pytest

from connectors import replay


def test_the_cli_help_and_argument_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        replay.main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "--from-events" in out and "Stop the sinks first" in out
    assert "Exit status" in out
    with pytest.raises(SystemExit) as exit_:
        replay.main(["--sinks", "redis,elastic"])
    assert exit_.value.code == 2 and "unknown sinks: elastic" in capsys.readouterr().err


def test_the_summary_line() -> None:
    r = replay.ReplayResult("postgres", 1000, 600, 5, 2.0)
    assert r.rate == 500
    line = r.summary()
    assert "1,000 records" in line and "(      500/s)" in line
    assert "600 written, 395 already current or superseded, 5 dead-lettered" in line
    assert replay.ReplayResult("redis", 0, 0, 0, 0.0).rate == 0.0
