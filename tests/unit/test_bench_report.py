"""The benchmark report: every number next to its target and ceiling (pure, no I/O)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.report import rows, table  # noqa: E402

RESULTS = {
    "write_api": {"results": [
        {"scenario": "add", "accepted_rps": 5200.0, "p99_ms": 41.0, "server_cpu_ms": 0.6,
         "broker_cpu_ms": 0.1},
        {"scenario": "add_nokafka", "accepted_rps": 3000.0, "server_cpu_ms": 0.35},
        {"scenario": "healthz", "rps": 9000.0, "p99_ms": 12.0},
        {"scenario": "add_secure", "accepted_rps": 4000.0, "p99_ms": 50.0, "server_cpu_ms": 0.8,
         "broker_cpu_ms": 0.1}],
        "kafka_cost": {"http_ms": 0.2, "waiting_ms": 0.1, "kafka_client_ms": 0.05,
                       "kafka_over_http": 0.75},
        "secure_vs_dev": {"acked_adds_per_s_ratio": 0.769, "cpu_per_add_ratio": 1.286}},
    "aggregator": {"summary": {"1_process": {"events_per_s_median": 12000,
                                             "events_per_cpu_s_median": 9000},
                               "2_processes": {"events_per_s_median": 20000}},
                   "runs": [{"processes": 1, "peak_rss_mib": [120, 80]}],
                   "state_bytes_per_open_cart": 900},
    "ceilings": {"kafka_confluent": {"consume_per_s": 500000},
                 "postgres": {"upsert_per_s": 20000}},
    "replay": {"events": 1_000_000, "seconds": 120.5, "aggregator_done_s": 80.0},
}


def test_each_number_sits_next_to_its_target_and_ceiling() -> None:
    by_metric = {m: (v, t, c) for m, v, t, c in rows(RESULTS)}
    assert by_metric["write API acked adds/s (64 conns)"][0] == 5200.0
    assert "9000.0/s" in by_metric["write API acked adds/s (64 conns)"][2]
    cpu = by_metric["write API CPU ms per acked add (server + broker)"]
    assert cpu[0] == 0.7 and "3000.0/s at 0.35 ms" in cpu[2]
    assert by_metric["aggregator events/s, 2 processes"][:2] == (20000, "> 12000")
    assert by_metric["aggregator peak RSS MiB, 1 process"][0] == 120
    assert "20000/s" in by_metric["PostgreSQL sink records/s"][2]
    assert by_metric["read API reads/s (cached carts)"][0] is None
    split = by_metric["write API Kafka part / HTTP part (CPU per acked add)"]
    assert split[:2] == (0.75, "<= 0.5") and "Kafka client 0.05 ms" in split[2]
    assert by_metric["Redis sink / Redis CPU ms per record"][0] is None  # not run


SECURE_READS = {"read_api": {"results": {
    "cached_cart": {"requests_per_s": 6000.0, "p99_ms": 10.0, "server_cpu_ms_per_request": 0.15},
    "cached_cart_secure": {"requests_per_s": 5000.0, "p99_ms": 12.0,
                           "server_cpu_ms_per_request": 0.17},
    "secure_vs_dev": {"reads_per_s_ratio": 0.833, "server_cpu_per_read_ratio": 1.133}}}}


def test_the_secure_profiles_ratios_are_checked_against_the_token_budget() -> None:
    by_metric = {m: (v, t, c) for m, v, t, c in rows(SECURE_READS)}
    ratio, target, ceiling = by_metric["read API secure/dev reads/s (median of paired rounds)"]
    assert (ratio, target) == (0.833, ">= 0.85")
    assert "5000.0/s" in ceiling and "0.17 ms/read vs dev 0.15" in ceiling
    lines = {line.split(" | ")[0].lstrip("| "): line for line in table(
        SECURE_READS).splitlines()}
    assert "| no |" in lines["read API secure/dev reads/s (median of paired rounds)"]
    # The median of the paired rounds decides, not one noisy overall ratio.
    met = {"read_api": {"results": {**SECURE_READS["read_api"]["results"],
                                    "secure_vs_dev": {"reads_per_s_ratio": 0.6,
                                                      "median_round_reads_per_s_ratio": 0.9}}}}
    assert "| yes |" in {line.split(" | ")[0].lstrip("| "): line for line in table(
        met).splitlines()}["read API secure/dev reads/s (median of paired rounds)"]
    write = {m: v for m, v, _t, _c in rows(RESULTS)}
    assert write["write API secure/dev acked adds/s (median of paired rounds)"] == 0.769
    assert write["write API secure/dev CPU per acked add (server + broker)"] == 1.286


def test_the_table_says_which_targets_are_met() -> None:
    lines = {line.split(" | ")[0].lstrip("| "): line for line in table(RESULTS).splitlines()}
    assert "| yes |" in lines["write API acked adds/s (64 conns)"]
    assert "| no |" in lines["write API p99 ms"]
    assert "| yes |" in lines["aggregator state bytes per open cart"]
    assert "| no |" in lines["replay of 1000000 events through aggregator and sinks, s"]
    assert "not run" in lines["read API p99 ms"]
    assert "| no |" in lines["write API Kafka part / HTTP part (CPU per acked add)"]
