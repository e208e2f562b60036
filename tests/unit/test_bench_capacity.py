"""The capacity plan's arithmetic on a fixed latest.json (pure, no I/O)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.capacity import FALLBACK, Target, figures, main, plan, render  # noqa: E402

LATEST = {
    "write_api": {"results": [
        {"scenario": "add", "server_cpu_ms": 0.3, "broker_cpu_ms": 0.1},
        {"scenario": "add_nokafka", "server_cpu_ms": 0.15}]},
    "aggregator": {"summary": {"1_process": {"events_per_cpu_s_median": 20000,
                                             "sustained_events_per_cpu_s_median": 25000}},
                   "state_bytes_per_open_cart": 1000},
    "connectors": {"redis": {"sink_cpu_ms_per_record": 0.06, "store_cpu_ms_per_record": 0.012},
                   "postgres": {"sink_cpu_ms_per_record": 0.12,
                                "store_cpu_ms_per_record": 0.18}},
    "read_api": {"results": {"cached_cart": {"server_cpu_ms_per_request": 0.15,
                                             "redis_cpu_ms_per_request": 0.006}}},
    "storage": {"by_lines": {"3": {"cart_details_bytes_median": 800,
                                   "redis": {"memory_usage_bytes_median": 1100,
                                             "used_memory_growth_per_key": 1200},
                                   "postgres": {"total_bytes_per_cart": 3000}}},
                "kafka": {"log_bytes_per_event": 220.0, "event_value_bytes_median": 180}},
}
TARGET = Target(commands_per_s=50_000, reads_per_s=500_000, open_carts=10_000_000)


def test_figures_come_from_latest_json_and_say_so() -> None:
    f = figures(LATEST)
    assert f["api_cpu_ms"] == 0.3 and f["broker_cpu_ms"] == 0.1
    assert f["fold_events_per_cpu_s"] == 25000  # the sustained figure before the overall one
    assert f["redis_bytes_per_cart"] == 1200  # the larger of MEMORY USAGE and used_memory
    assert f["event_log_bytes"] == 220.0
    assert all(src.startswith("measured") for name, src in f.sources.items()
               if name != "reserve_checkouts_per_s")  # no benchmark writes that one yet
    assert "architecture.md" in f.sources["reserve_checkouts_per_s"]


def test_a_missing_figure_falls_back_with_its_source_named() -> None:
    f = figures({"write_api": LATEST["write_api"]})
    assert f["api_cpu_ms"] == 0.3
    assert f["fold_events_per_cpu_s"] == FALLBACK["fold_events_per_cpu_s"][0]
    assert f.sources["fold_events_per_cpu_s"] == FALLBACK["fold_events_per_cpu_s"][1]
    assert "architecture.md" in f.sources["fold_events_per_cpu_s"]


def test_the_plan_for_50k_commands_500k_reads_10m_carts() -> None:
    v = plan(figures(LATEST), TARGET).values
    # 50,000 x 0.3 ms = 15 cores of work, planned at 60 %: 25 processes.
    assert v["api_processes"] == 25
    # 50,000 / (25,000 x 0.6) = 3.33: 4 aggregator processes.
    assert v["aggregator_processes"] == 4
    assert math.isclose(v["aggregator_state_gb"], 10.0)
    # max(4 x 4 growth, 11 MB/s x 4 / 10 MB/s, 12) = 16: 24, the next multiple of 12.
    assert v["partitions"] == 24
    # 50,000 x (220 + (800 + 40)) B = 53 MB/s, written 3 times.
    assert math.isclose(v["produced_mb_s"], 53.0)
    assert math.isclose(v["disk_write_mb_s"], 159.0)
    # 50,000 x 220 B x 86,400 s x 3 = 2,851 GB a day.
    assert math.isclose(v["cart_events_gb_per_day"], 2851.2)
    # 2 x 50,000 x 3 x 0.1 ms / 0.6 = 50 cores: 4 hosts of 16; I/O needs 2; replicas 3.
    assert math.isclose(v["broker_cores"], 50.0)
    assert v["brokers"] == 4
    # 10 M carts x 1,200 B x 1.3 = 15.6 GB; (50,000 x 0.012 + 500,000 x 0.006) / 0.6 = 6 cores.
    assert math.isclose(v["redis_gb"], 15.6)
    assert math.isclose(v["redis_cores"], 6.0)
    assert v["redis_shards"] == 6
    assert v["redis_sink_processes"] == 5 and v["postgres_sink_processes"] == 10
    assert math.isclose(v["postgres_cores"], 15.0)
    assert v["postgres_row_writes_s"] == 400_000
    assert v["postgres_rows"] == 50_000_000
    assert math.isclose(v["postgres_gb"], 30.0)
    # 500,000 x 0.15 ms / 0.6 = 125 read API processes.
    assert v["read_processes"] == 125
    # 25 + 4 + 5 + 10 + 125 + 6 + 15 + 50
    assert v["total_cores"] == 240


def test_customers_and_idempotency_records_grow_redis() -> None:
    base = plan(figures(LATEST), TARGET).values["redis_gb"]
    more = plan(figures(LATEST), Target(customers=20_000_000, idempotency_share=0.5,
                                        idempotency_ttl_s=600, idempotency_bytes=400))
    # Twice the customers, plus 50,000 x 0.5 x 600 s x 400 B = 6 GB of idempotency records.
    assert math.isclose(more.values["redis_gb"], 2 * base + 6.0)
    assert any("Idempotency records" in line for line in more.limits)


def test_the_text_shows_arithmetic_assumptions_and_limits(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    f = figures(LATEST)
    text = render(f, TARGET, plan(f, TARGET))
    assert "= 50,000 cmd/s x 0.3 ms / 1000 / 0.6 utilisation" in text
    assert "Assumptions: utilisation=0.6, replication=3" in text
    for limit in ("Hot customer key", "One partition's throughput", "Redis memory",
                  "The compacted topic", "The event store"):
        assert limit in text
    path = tmp_path / "latest.json"
    path.write_text(json.dumps(LATEST))
    assert main(["--results", str(path), "--commands", "1000", "--json"]) == 0
    assert '"api_processes": 1' in capsys.readouterr().out
