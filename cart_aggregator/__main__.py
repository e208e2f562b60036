"""`python -m cart_aggregator [bytewax.run options]`: run the dataflow with recovery on.

Creates the recovery partitions under $RUN_DIR/aggregator/recovery on first start, enables
Bytewax's dataflow API (Prometheus metrics at :AGG_METRICS_PORT/metrics) and hands over to
`bytewax.run`. Extra arguments pass through, e.g. `-i 0 -a host0:2101 -a host1:2101` to run
one of several processes.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

from cart_aggregator.config import Config

RECOVERY_PARTITIONS = 4


def main(argv: list[str]) -> None:
    """Prepare recovery, then exec bytewax.run on the flow factory."""
    cfg = Config.from_env()
    cfg.recovery_dir.mkdir(parents=True, exist_ok=True)
    # Several processes of one cluster may share the directory: one of them initialises it.
    with open(cfg.recovery_dir.parent / "recovery.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cfg.recovery_dir / "part-0.sqlite3").exists():
            subprocess.run([sys.executable, "-m", "bytewax.recovery", str(cfg.recovery_dir),
                            str(RECOVERY_PARTITIONS)], check=True)
    os.environ.setdefault("BYTEWAX_DATAFLOW_API_ENABLED", "true")
    os.environ.setdefault("BYTEWAX_DATAFLOW_API_PORT", str(cfg.metrics_port))
    os.environ.setdefault("BYTEWAX_DATAFLOW_API_CACHE_PATH",
                          str(cfg.run_dir / "aggregator"))
    args = [sys.executable, "-m", "bytewax.run", "cart_aggregator.flow:flow_from_env()",
            "-r", str(cfg.recovery_dir), "-s", str(cfg.snapshot_interval_s),
            "-b", str(cfg.backup_interval_s)]
    if not any(a in ("-w", "--workers-per-process") for a in argv):
        args += ["-w", str(cfg.workers)]
    os.execv(sys.executable, [*args, *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
