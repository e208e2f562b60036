"""Merge bench/results/*.json into bench/results/latest.json and print a markdown table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def rows(results: dict[str, Any]) -> list[tuple[str, Any, str, Any]]:
    """(metric, measured, target, ceiling) for every number the issues ask for."""
    agg = results.get("aggregator", {})
    runs = {r["processes"]: r for r in agg.get("runs", [])}
    con = results.get("connectors", {})
    fresh = results.get("freshness", {})
    return [
        ("aggregator events/s, 1 process", _get(runs.get(1, {}), "events_per_s"), ">= 40000", None),
        ("aggregator events/s, 2 processes", _get(runs.get(2, {}), "events_per_s"), "> 1 proc",
         None),
        ("aggregator peak RSS MiB, 1 process", _get(runs.get(1, {}), "peak_rss_mib"), "-", None),
        ("aggregator state bytes per open cart", agg.get("state_bytes_per_open_cart"), "<= 2048",
         None),
        ("Redis sink records/s", _get(con, "redis", "records_per_s"), ">= 20000", None),
        ("PostgreSQL sink records/s", _get(con, "postgres", "records_per_s"), ">= 10000", None),
        ("freshness p50 ms", _get(fresh, "freshness_ms", "p50"), "-", None),
        ("freshness p99 ms", _get(fresh, "freshness_ms", "p99"), "<= 500", None),
    ]


def main() -> None:
    """Write latest.json and print the table."""
    results = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))
               if p.stem != "latest"}
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    table = ["| metric | measured | target | ceiling |", "|---|---|---|---|"]
    for metric, value, target, ceiling in rows(results):
        table.append(f"| {metric} | {value} | {target} | {'-' if ceiling is None else ceiling} |")
    (RESULTS / "latest.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    print("\nwrite API and read API: see write_api.json / read_api.json (with their ceilings)")


if __name__ == "__main__":
    main()
