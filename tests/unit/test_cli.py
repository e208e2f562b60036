"""The `cartstream` command line: help as a reference, argument errors, dry-run loads, progress."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from connectors.config import Config
from connectors.progress import Progress
from tests.support.cli import cartstream

ROOT = Path(__file__).resolve().parents[2]
# Every job, with what its --help must tell (besides options, environment and exit status).
SUBCOMMANDS = {
    ("serve", "write"): "WRITE_PORT",
    ("serve", "read"): "READ_PORT",
    ("aggregate",): "--init-recovery",
    ("sink", "redis"): "cart-details-event",
    ("sink", "postgres"): "cart-details-event",
    ("sink", "catalog"): "product-details-events",
    ("catalog", "load"): "--dry-run",
    ("replay",): "--from-events",
    ("topics",): "--check-only",
    ("migrate",): "DATABASE_URL",
    ("token",): "--customer",
    ("secrets",): "0600",
}
# Nowhere: a dry run must not need a broker.
OFFLINE = Config(kafka_bootstrap="127.0.0.1:1")
GOOD = '{"productId":"1","productName":"IPhone 12","price":"65000","stockQty":768}\n'


def test_the_top_level_help_lists_every_job() -> None:
    result = cartstream("--help")
    assert result.exit_code == 0
    for name in ("serve", "aggregate", "sink", "catalog", "replay", "topics", "migrate"):
        assert f"  {name} " in result.stdout
    assert cartstream().exit_code in (0, 2)  # no command: the same help


@pytest.mark.parametrize("command", list(SUBCOMMANDS), ids=" ".join)
def test_every_subcommand_help_is_a_reference(command: tuple[str, ...]) -> None:
    result = cartstream(*command, "--help")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"Usage: cartstream {' '.join(command)}" in out
    assert "Environment:" in out and "Exit status" in out and SUBCOMMANDS[command] in out
    assert cartstream(*command, "-h").stdout == out


def test_groups_without_a_job_show_their_jobs() -> None:
    assert {"write", "read"} <= set(cartstream("serve", "--help").stdout.split())
    assert {"redis", "postgres", "catalog"} <= set(cartstream("sink", "--help").stdout.split())
    assert "load" in cartstream("catalog", "--help").stdout.split()


@pytest.mark.parametrize("args, message", [
    (["catalog", "load"], "Missing argument 'FILE'"),
    (["catalog", "load", "x", "--nope"], "No such option: --nope"),
    (["topics", "--wait", "soon"], "Invalid value for '--wait'"),
    (["replay", "--sinks", "redis,elastic"], "unknown sinks: elastic"),
    (["aggregate", "-i", "0"], "-i/AGG_PROCESS_ID needs -a/AGG_ADDRESSES"),
    (["sink", "kafka"], "No such command 'kafka'"),
    (["serve"], "write"),
])
def test_bad_usage_exits_2_with_the_reason(args: list[str], message: str) -> None:
    result = cartstream(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_a_malformed_setting_is_one_line_and_exit_2() -> None:
    result = cartstream("serve", "write", env={"WRITE_PORT": "eighty"})
    assert result.exit_code == 2
    assert result.stderr.startswith("cartstream: bad configuration: WRITE_PORT must be")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_dry_run_checks_every_row_and_produces_nothing(tmp_path: Path) -> None:
    f = tmp_path / "catalog.jsonl"
    f.write_text(GOOD + '2:{"productId":"2","productName":"X","price":"-1","stockQty":1}\n')
    result = cartstream("catalog", "load", str(f), "--dry-run", config=OFFLINE)
    assert result.exit_code == 1
    assert f"{f}:2: INVALID_PRICE" in result.stderr
    assert "1 products valid (dry run: nothing loaded), 1 bad rows" in result.stdout
    f.write_text(GOOD)
    assert cartstream("catalog", "load", str(f), "--dry-run", config=OFFLINE).exit_code == 0


def test_a_missing_catalog_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = cartstream("catalog", "load", str(tmp_path / "nope"), "--dry-run", config=OFFLINE)
    assert result.exit_code == 2
    assert result.stderr == f"cartstream: no such file: {tmp_path / 'nope'}\n"


def test_a_large_load_logs_progress_lines_and_a_summary_off_a_terminal(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "big.jsonl"
    rows = 15_000
    f.write_text("".join(GOOD.replace('"1"', f'"{i}"') for i in range(rows)))
    assert f.stat().st_size > 1 << 20
    with caplog.at_level(logging.INFO, logger="cartstream.progress"):
        result = cartstream("catalog", "load", str(f), "--dry-run", config=OFFLINE)
    assert result.exit_code == 0 and f"{rows} products valid" in result.stdout
    lines = [r.getMessage() for r in caplog.records if r.name == "cartstream.progress"]
    assert lines[-1].startswith(f"catalog big.jsonl: done, {rows:,} rows in ")
    with caplog.at_level(logging.INFO, logger="cartstream.progress"):
        caplog.clear()
        cartstream("catalog", "load", str(f), "--dry-run", "--quiet", config=OFFLINE)
    assert not [r for r in caplog.records if r.name == "cartstream.progress"]


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_off_a_terminal_is_timed_lines_with_rate_and_eta() -> None:
    said: list[str] = []
    p = Progress("replay redis", 1000, "records", stream=io.StringIO(), every_s=0,
                 emit=said.append)
    p.set(250, note="750 left")
    p.update(250)
    p.close()
    assert said[0].startswith("replay redis: 250/1,000 records (25%), ")
    assert "/s, ETA " in said[0] and said[0].endswith(", 750 left")
    assert said[1].startswith("replay redis: 500/1,000 records (50%)")
    assert said[-1].startswith("replay redis: done, 500 records in 0:00 (")
    p.close()
    assert len(said) == 3  # closing twice says nothing more


def test_progress_lines_are_spaced_by_every_s() -> None:
    said: list[str] = []
    p = Progress("x", 10, stream=io.StringIO(), every_s=3600, emit=said.append)
    for _ in range(10):
        p.update(1)
    p.close()
    assert len(said) == 1 and said[0].startswith("x: done, 10 records")


def test_progress_on_a_terminal_is_a_bar_and_quiet_is_nothing() -> None:
    said: list[str] = []
    tty = _Tty()
    with Progress("catalog c.jsonl", 100, "rows", stream=tty, every_s=0,
                  emit=said.append) as p:
        p.set(100)
    assert "catalog c.jsonl" in tty.getvalue() and "100/100" in tty.getvalue()
    assert said == []
    quiet = _Tty()
    with Progress("x", 100, stream=quiet, every_s=0, enabled=False, emit=said.append) as p:
        p.set(50)
    assert quiet.getvalue() == "" and said == []


def test_python_m_cartstream_runs_the_same_command() -> None:
    out = subprocess.run([sys.executable, "-m", "cartstream", "topics", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "Usage: cartstream topics" in out and "--check-only" in out


def test_token_prints_a_one_hour_token_for_a_customer_or_an_admin() -> None:
    import jwt

    from cart_web.settings import AuthSettings

    cfg = AuthSettings(profile="secure", jwt_secret="cli-test-secret-cli-test-secret-x")
    result = cartstream("token", "--customer", "123", config=cfg)
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.stdout.strip(), "cli-test-secret-cli-test-secret-x",
                        algorithms=["HS256"], audience="cartstream")
    assert claims["sub"] == "123" and claims["exp"] - claims["iat"] == 3600
    assert "scope" not in claims
    admin = cartstream("token", "--admin", config=cfg)
    claims = jwt.decode(admin.stdout.strip(), "cli-test-secret-cli-test-secret-x",
                        algorithms=["HS256"], audience="cartstream")
    assert claims["scope"] == "cartstream:admin" and "/" in claims["sub"]
    assert cartstream("token", config=cfg).exit_code == 2
    assert cartstream("token", "--customer", "1", "--admin", config=cfg).exit_code == 2


def test_secrets_generates_each_file_once_and_prints_only_paths(tmp_path: Path) -> None:
    import stat

    from cart_web.settings import AuthSettings

    cfg = AuthSettings(run_dir=tmp_path)
    first = cartstream("secrets", config=cfg)
    assert first.exit_code == 0, first.output
    path = tmp_path / "secrets" / "jwt-hs256"
    assert str(path) in first.stdout.splitlines()
    assert str(tmp_path / "secrets" / "redis-read-api") in first.stdout.splitlines()
    assert str(tmp_path / "secrets" / "pg-sink") in first.stdout.splitlines()
    value = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert value.strip() not in first.output
    assert cartstream("secrets", config=cfg).exit_code == 0
    assert path.read_text() == value  # kept, not regenerated
