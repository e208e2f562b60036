"""`cartstream aggregate`: run the dataflow with recovery on, and serve its metrics.

    cartstream aggregate                             # one process, AGG_WORKERS threads
    AGG_PROCESSES=2 cartstream aggregate             # a two-process cluster on this machine
    cartstream aggregate -i 0 -a "h0:2101;h1:2101"   # process 0 of a cluster of machines

Creates the recovery partitions under $RUN_DIR/aggregator/recovery when missing (see README for
clusters of machines), serves Prometheus metrics on AGG_METRICS_PORT (+ process index) and runs
the flow in this process. SIGTERM and SIGINT stop it; recovery makes any stop safe.
"""

from __future__ import annotations

import fcntl
import gc
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import FrameType

from cart_aggregator.config import Config, parse_addresses

log = logging.getLogger("cart_aggregator")


def apply_flags(cfg: Config, *, workers: int | None = None, process_id: int | None = None,
                addresses: Sequence[str] = (), processes: int | None = None,
                snapshot_interval_s: float | None = None,
                backup_interval_s: float | None = None,
                recovery_directory: Path | None = None, no_recovery: bool = False) -> Config:
    """Command-line flags override the environment (same flags as `bytewax.run`).

    `addresses` entries may each hold several, ';'-separated. Raises ValueError for a cluster
    member that lacks its index or the addresses.
    """
    cfg = cfg.replace(
        workers=workers or cfg.workers,
        process_id=process_id if process_id is not None else cfg.process_id,
        addresses=tuple(x for arg in addresses for x in parse_addresses(arg))
        if addresses else cfg.addresses,
        processes=processes or cfg.processes,
        snapshot_interval_s=snapshot_interval_s or cfg.snapshot_interval_s,
        backup_interval_s=backup_interval_s if backup_interval_s is not None
        else cfg.backup_interval_s,
        recovery=cfg.recovery and not no_recovery,
        recovery_directory=recovery_directory or cfg.recovery_directory,
    )
    if cfg.addresses and cfg.process_id is None:
        raise ValueError("-a/AGG_ADDRESSES needs -i/AGG_PROCESS_ID")
    if cfg.process_id is not None and not cfg.addresses:
        raise ValueError("-i/AGG_PROCESS_ID needs -a/AGG_ADDRESSES")
    return cfg


def _is_local(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", socket.gethostname()):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def prepare_recovery(directory: Path, partitions: int, may_create: bool, state_format: str,
                     readable: tuple[str, ...] = ()) -> None:
    """Make sure `directory` holds recovery partitions written by this flow's state format.

    Partitions of a `readable` older format are resumed and marked with the current one.
    Partitions of another format cannot be resumed: they are moved aside and the flow starts
    over from the beginning of the topics, which re-emits the same versions.
    """
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / "STATE_FORMAT"
    # Several processes of a local cluster share the directory: one prepares it.
    with open(directory.parent / f"{directory.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        parts = sorted(directory.glob("part-*.sqlite3"))
        found = marker.read_text().strip() if marker.exists() else None
        if parts and found in readable:
            log.info("resuming recovery state of format %r as %r", found, state_format)
        elif parts and found != state_format:
            if not may_create:
                raise SystemExit(f"{directory} holds state of format {found!r}, this flow "
                                 f"writes {state_format!r}; move it aside on every machine")
            aside = directory.with_name(f"{directory.name}.{found or 'old'}.{int(time.time())}"
                                        .replace("/", "-"))
            directory.rename(aside)
            log.warning("recovery state of format %r moved to %s; starting from the log",
                        found, aside)
            directory.mkdir()
            parts = []
        if not parts:
            if not may_create:
                raise SystemExit(f"no recovery partitions in {directory}: create them once "
                                 f"(python -m bytewax.recovery DIR N) and give each machine "
                                 f"its share (see cart_aggregator/README.md)")
            from bytewax.recovery import init_db_dir

            init_db_dir(directory, partitions)
            log.info("created %d recovery partitions in %s", partitions, directory)
        marker.write_text(state_format + "\n")


def _stop(signum: int, frame: FrameType | None) -> None:
    # bytewax checks for pending Python signals between steps and unwinds its workers.
    raise KeyboardInterrupt


def _stop_with_parent(parent: int) -> None:
    """A local-cluster member must not outlive its launcher (even one killed with -9)."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def tune_gc(threshold: int) -> None:
    """Collect the youngest generation every `threshold` allocations; 0: never collect."""
    if threshold:
        gc.set_threshold(threshold, 20, 10)
        gc.enable()
    else:
        gc.disable()


def run_process(cfg: Config) -> int:
    """Run this process's share of the flow until it stops; returns the exit status."""
    from bytewax.recovery import RecoveryConfig
    from bytewax.testing import cluster_main

    from cart_aggregator import metrics
    from cart_aggregator.flow import READABLE_FORMATS, STATE_FORMAT, build_flow

    index = cfg.process_id or 0
    recovery = None
    if cfg.recovery:
        local_cluster = all(_is_local(a) for a in cfg.addresses)
        prepare_recovery(cfg.recovery_dir, cfg.recovery_partitions, local_cluster,
                         STATE_FORMAT, READABLE_FORMATS)
        recovery = RecoveryConfig(str(cfg.recovery_dir),
                                  timedelta(seconds=cfg.backup_interval_s))
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_host, cfg.metrics_port + index, max_lag=cfg.ready_max_lag,
                      lag_interval_s=cfg.lag_interval_s)
        metrics.LagMonitor(metrics.kafka_watermarks(cfg.kafka_client()),
                           cfg.lag_interval_s).start()
    signal.signal(signal.SIGTERM, _stop)
    if os.environ.get("AGG_PARENT_PID"):
        _stop_with_parent(int(os.environ["AGG_PARENT_PID"]))
    # Per event the flow allocates a dozen container objects that die by reference count
    # (hardly anything forms cycles). A gen-0 collection costs about the same whether 10,000
    # or 100,000 objects are pending (it mostly walks survivors: states and batches in
    # flight), so collecting ten times less often cut GC from ~7 % to ~3 % of the CPU of an
    # in-memory run, for pauses of ~0.1 s every few seconds under full load. Modules and
    # config never need collecting. A replay folds a bounded log into a process that then
    # stops, and with 100k customers collections were still ~10 % of its CPU (perf): it
    # runs with none (AGG_GC_THRESHOLD=0, see connectors/replay.py).
    gc.freeze()
    tune_gc(cfg.gc_threshold)
    log.info("aggregator process %d: %d worker(s), cluster %s, recovery %s", index, cfg.workers,
             list(cfg.addresses) or "-", cfg.recovery_dir if recovery else "off")
    try:
        # bytewax.run's entry point runs a lone worker on the main thread, where a signal
        # interrupts whatever Python callback is running. cluster_main (the same runtime that
        # `bytewax.run -w/-i/-a` uses) keeps the main thread free to take signals and stop the
        # workers between steps.
        cluster_main(build_flow(cfg), list(cfg.addresses), index,
                     worker_count_per_proc=cfg.workers,
                     epoch_interval=timedelta(seconds=cfg.snapshot_interval_s),
                     recovery_config=recovery)
    except KeyboardInterrupt:
        log.info("stopped")
    return 0


def run_local_cluster(cfg: Config, argv: Sequence[str]) -> int:
    """Start `cfg.processes` processes of one cluster on this machine and watch them.

    `argv` holds the `cartstream aggregate` flags every member gets. A cluster cannot lose a
    member, so when one exits the others are stopped too, and the exit status is the first
    failure's.
    """
    addresses = ";".join(f"127.0.0.1:{cfg.cluster_port + i}" for i in range(cfg.processes))
    # Each child gets -i/-a, which makes it a cluster member rather than another launcher.
    env = {**os.environ, "AGG_PARENT_PID": str(os.getpid())}
    children = [subprocess.Popen([sys.executable, "-m", "cartstream", "aggregate", *argv,
                                  "-i", str(i), "-a", addresses], env=env)
                for i in range(cfg.processes)]

    def forward(signum: int, frame: FrameType | None) -> None:
        for c in children:
            if c.poll() is None:
                c.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = None
    while status is None:
        for c in children:
            code = c.poll()
            if code is not None:
                status = code
                break
        else:
            time.sleep(0.5)
    forward(signal.SIGTERM, None)
    for c in children:
        try:
            c.wait(timeout=30)
        except subprocess.TimeoutExpired:
            c.kill()
    return status or max((c.returncode or 0) for c in children)


def run(cfg: Config, argv: Sequence[str] = (), init_partitions: int | None = None) -> int:
    """Run the aggregator as `cfg` says (`argv`: the flags local cluster members get)."""
    logging.basicConfig(level=cfg.log_level,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if init_partitions:
        from cart_aggregator.flow import STATE_FORMAT

        prepare_recovery(cfg.recovery_dir, init_partitions, True, STATE_FORMAT)
        return 0
    if cfg.processes > 1 and cfg.process_id is None:
        return run_local_cluster(cfg, argv)
    return run_process(cfg)
