"""CPU seconds (and context switches) of a process and its descendants (Linux /proc): costs
that move less with the machine's load than wall-clock rates do.

Wall-clock rates on a shared 2-core machine move with whatever else runs; the CPU a server
spends per request moves much less, so the benchmarks report both.
"""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, utime + stime in seconds) of one process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state ppid ... utime (field 14) stime (15), 1-based in proc(5).
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu_s(root: int) -> float:
    """CPU seconds of `root` and every live descendant (threads included)."""
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                stats[int(name)] = st
    total, todo, seen = 0.0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(p for p, (ppid, _) in stats.items() if ppid == pid)
    return total


def tree_ctx_switches(root: int) -> int:
    """Context switches (voluntary and not) of `root`, its live descendants and their threads:
    each is a wake-up or a preemption, the cost that waiting in threads adds."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(st[0], []).append(int(name))
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, ()))
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/status", "rb") as f:
                    for line in f:
                        if b"ctxt_switches:" in line:
                            total += int(line.split()[1])
            except OSError:
                continue
    return total
