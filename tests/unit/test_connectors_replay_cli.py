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


def test_the_aggregator_line_counts_events_and_cpu_is_shown_when_measured() -> None:
    line = replay.ReplayResult(replay.AGGREGATOR, 2000, 2000, 3, 4.0, 7.25).summary()
    assert "2,000 events folded in" in line and "(      500/s), 3 dead-lettered, 7.2s CPU" in line
    assert "CPU" not in replay.ReplayResult("redis", 1, 1, 0, 1.0).summary()


def test_from_takes_details_or_events() -> None:
    result = cartstream("replay", "--from", "elsewhere")
    assert result.exit_code == 2 and "'elsewhere' is not one of details, events" in result.stderr
    help_text = cartstream("replay", "--help").stdout
    assert "--from" in help_text and "re-folds the whole of" in help_text


def test_the_replay_aggregator_gets_replay_defaults_the_environment_overrides() -> None:
    from connectors.config import Config

    cfg = Config.from_env({"TOPIC_CART_EVENTS": "ev", "RUN_DIR": "/tmp/r"})
    env = replay.replay_aggregator_environ(cfg, {"PATH": "/bin"})
    assert env["AGG_GC_THRESHOLD"] == "0" and int(env["AGG_SOURCE_BATCH_SIZE"]) > 10_000
    assert (env["PATH"], env["TOPIC_CART_EVENTS"]) == ("/bin", "ev")
    # What the operator sets wins over the replay's defaults; the topics are the replay's own.
    env = replay.replay_aggregator_environ(cfg, {"AGG_GC_THRESHOLD": "100000",
                                                 "TOPIC_CART_EVENTS": "other"})
    assert (env["AGG_GC_THRESHOLD"], env["TOPIC_CART_EVENTS"]) == ("100000", "ev")
    assert env["AGG_SOURCE_BATCH_SIZE"] == replay.REPLAY_AGGREGATOR_DEFAULTS[
        "AGG_SOURCE_BATCH_SIZE"]
