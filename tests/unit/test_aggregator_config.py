"""Aggregator configuration and command line: environment, flags, recovery directory set-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from cart_aggregator.config import Config, parse_addresses
from cart_aggregator.flow import STATE_FORMAT
from cart_aggregator.service import apply_flags, prepare_recovery, tune_gc
from tests.support.cli import cartstream


def test_defaults_fit_the_local_stack() -> None:
    cfg = Config.from_env({})
    assert cfg.kafka_bootstrap == "localhost:9092"
    assert (cfg.topic_cart_events, cfg.topic_products) == ("cart-events",
                                                           "product-details-events")
    assert (cfg.topic_cart_details, cfg.topic_dead_letter) == ("cart-details-event",
                                                               "cartstream-dead-letter")
    assert cfg.product_wait_s == 30 and cfg.recovery and cfg.metrics_port == 9102
    assert cfg.recovery_dir == Path(".run/aggregator/recovery")
    assert (cfg.workers, cfg.processes, cfg.addresses, cfg.process_id) == (1, 1, (), None)
    assert (cfg.source_batch_size, cfg.source_idle_ms) == (10_000, 10)
    assert cfg.snapshot_interval_s == 10
    assert cfg.gc_threshold == 100_000


@pytest.fixture
def gc_restored():
    """Puts Python's collector back as it was after a test that tunes it."""
    import gc

    enabled, threshold = gc.isenabled(), gc.get_threshold()
    yield gc
    gc.set_threshold(*threshold)
    (gc.enable if enabled else gc.disable)()


def test_gc_threshold_zero_turns_collection_off(gc_restored) -> None:
    gc = gc_restored
    tune_gc(Config.from_env({"AGG_GC_THRESHOLD": "0"}).gc_threshold)
    assert not gc.isenabled()
    tune_gc(Config.from_env({"AGG_GC_THRESHOLD": "250000"}).gc_threshold)
    assert gc.isenabled() and gc.get_threshold() == (250_000, 20, 10)
    with pytest.raises(ValueError):
        Config.from_env({"AGG_GC_THRESHOLD": "-1"})


def test_an_idle_partition_is_polled_again_after_the_configured_wait() -> None:
    assert Config.from_env({"AGG_SOURCE_IDLE_MS": "2.5"}).source_idle_ms == 2.5
    assert Config.from_env({"AGG_SOURCE_IDLE_MS": "0"}).source_idle_ms == 0


def test_environment_overrides() -> None:
    cfg = Config.from_env({
        "KAFKA_BOOTSTRAP": "k:1", "TOPIC_CART_EVENTS": "e", "TOPIC_PRODUCTS": "p",
        "TOPIC_CART_DETAILS": "d", "TOPIC_DEAD_LETTER": "x", "RUN_DIR": "/tmp/run",
        "AGG_WORKERS": "2", "AGG_PROCESSES": "3", "AGG_ADDRESSES": "a:1;b:2",
        "AGG_PROCESS_ID": "1", "AGG_SNAPSHOT_INTERVAL_S": "0.5", "AGG_BACKUP_INTERVAL_S": "0",
        "AGG_PRODUCT_WAIT_S": "2.5", "AGG_METRICS_PORT": "0", "AGG_RECOVERY": "off",
    })
    assert (cfg.kafka_bootstrap, cfg.topic_cart_events, cfg.topic_products,
            cfg.topic_cart_details, cfg.topic_dead_letter) == ("k:1", "e", "p", "d", "x")
    assert (cfg.workers, cfg.processes, cfg.addresses, cfg.process_id) == (2, 3, ("a:1", "b:2"),
                                                                          1)
    assert (cfg.snapshot_interval_s, cfg.backup_interval_s, cfg.product_wait_s) == (0.5, 0, 2.5)
    assert cfg.metrics_port == 0 and not cfg.recovery
    assert cfg.recovery_dir == Path("/tmp/run/aggregator/recovery")


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValueError):
        Config.from_env({"AGG_RECOVERY": "maybe"})
    with pytest.raises(ValueError):
        Config.from_env({"AGG_WORKERS": "two"})


def test_addresses_take_bytewax_and_list_spellings() -> None:
    assert parse_addresses("h0:2101;h1:2101") == ("h0:2101", "h1:2101")
    assert parse_addresses(" h0:2101, h1:2101 ") == ("h0:2101", "h1:2101")
    assert parse_addresses("") == ()


def test_flags_override_the_environment() -> None:
    cfg = apply_flags(Config(), workers=3, process_id=1, addresses=["h0:1", "h1:1"],
                      snapshot_interval_s=2, backup_interval_s=0, recovery_directory=Path("/tmp/r"))
    assert (cfg.workers, cfg.process_id, cfg.addresses) == (3, 1, ("h0:1", "h1:1"))
    assert (cfg.snapshot_interval_s, cfg.backup_interval_s) == (2, 0)
    assert cfg.recovery_dir == Path("/tmp/r")
    assert apply_flags(Config(), addresses=["h0:1;h1:1"], process_id=0).addresses == ("h0:1",
                                                                                       "h1:1")
    assert not apply_flags(Config(), no_recovery=True).recovery
    assert apply_flags(Config(processes=2)) == Config(processes=2)


def test_a_cluster_member_needs_its_index_and_the_addresses() -> None:
    with pytest.raises(ValueError, match="needs -i"):
        apply_flags(Config(), addresses=["h0:1;h1:1"])
    with pytest.raises(ValueError, match="needs -a"):
        apply_flags(Config(), process_id=0)
    result = cartstream("aggregate", "-a", "h0:1;h1:1", config=Config())
    assert result.exit_code == 2 and "-a/AGG_ADDRESSES needs -i/AGG_PROCESS_ID" in result.stderr


def test_init_recovery_only_creates_the_partitions(tmp_path: Path) -> None:
    result = cartstream("aggregate", "--init-recovery", "3", "-r", str(tmp_path / "parts"))
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "parts").glob("part-*.sqlite3"))) == 3
    assert (tmp_path / "parts" / "STATE_FORMAT").read_text().strip() == STATE_FORMAT


def test_recovery_partitions_are_created_once(tmp_path: Path) -> None:
    d = tmp_path / "aggregator" / "recovery"
    prepare_recovery(d, 3, True, "fmt/1")
    assert sorted(p.name for p in d.glob("part-*.sqlite3")) == [f"part-{i}.sqlite3"
                                                                for i in range(3)]
    stamp = (d / "part-0.sqlite3").stat().st_mtime_ns
    prepare_recovery(d, 3, True, "fmt/1")
    assert (d / "part-0.sqlite3").stat().st_mtime_ns == stamp
    assert (d / "STATE_FORMAT").read_text().strip() == "fmt/1"


def test_state_of_another_format_is_moved_aside(tmp_path: Path) -> None:
    d = tmp_path / "recovery"
    prepare_recovery(d, 2, True, "fmt/1")
    prepare_recovery(d, 2, True, "fmt/2")
    assert (d / "STATE_FORMAT").read_text().strip() == "fmt/2"
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("recovery.fmt-1.")]
    assert len(aside) == 1 and len(list(aside[0].glob("part-*.sqlite3"))) == 2


def test_state_of_a_readable_older_format_is_resumed_and_marked_as_the_new_one(
        tmp_path: Path) -> None:
    d = tmp_path / "recovery"
    prepare_recovery(d, 2, True, "fmt/1")
    stamp = (d / "part-0.sqlite3").stat().st_mtime_ns
    prepare_recovery(d, 2, False, "fmt/2", ("fmt/1",))
    assert (d / "part-0.sqlite3").stat().st_mtime_ns == stamp
    assert (d / "STATE_FORMAT").read_text().strip() == "fmt/2"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("recovery.fmt")]


def test_a_cluster_of_machines_never_creates_partitions_on_its_own(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no recovery partitions"):
        prepare_recovery(tmp_path / "r", 2, False, "fmt/1")
    prepare_recovery(tmp_path / "r2", 2, True, "fmt/1")
    with pytest.raises(SystemExit, match="format"):
        prepare_recovery(tmp_path / "r2", 2, False, "fmt/2")
