"""Where a benchmark's CPU time goes, by process: read from /proc before and after a timed run.

Each process is named by what it is (a Serve replica by its deployment, SeaweedFS, Kafka, MariaDB,
the notifier, Ray's own daemons), so the figures say which stage spent the machine's cores. Linux only;
elsewhere the snapshot is empty and the figures are left out.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

__all__ = ["cpu_snapshot", "cpu_seconds_by_group"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_REPLICA = re.compile(r"ray::ServeReplica:[^:]+:(\w+)")
_GROUPS = (  # (pattern in the command line, group name), first match wins
    (re.compile(r"ray::ProxyActor"), "serve proxy"),
    (re.compile(r"ray::ServeController"), "serve controller"),
    (re.compile(r"ray::KafkaIngestActor"), "ingest actor"),
    (re.compile(r"raylet|gcs_server|dashboard|log_monitor|runtime_env"), "ray daemons"),
    (re.compile(r"weed"), "seaweedfs"),
    (re.compile(r"kafka\.Kafka|kafka-server"), "kafka"),
    (re.compile(r"mariadbd|mysqld"), "mariadb"),
    (re.compile(r"notifier"), "notifier"),
    (re.compile(r"benchmarks/serving\.py"), "benchmark driver"),
    (re.compile(r"ray::"), "other ray workers"),
)


def _group(cmdline: str) -> str:
    if match := _REPLICA.search(cmdline):
        return f"replica {match.group(1)}"
    return next((name for pattern, name in _GROUPS if pattern.search(cmdline)), "other")


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """pid -> (group, CPU seconds used so far: user + system, its own and its reaped children's)."""
    out: dict[int, tuple[str, float]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if not cmdline:
            continue  # kernel threads
        utime, stime = int(fields[11]), int(fields[12])
        out[int(proc.name)] = (_group(cmdline), (utime + stime) / _TICKS)
    return out


def cpu_seconds_by_group(before: dict[int, tuple[str, float]],
                         after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds each group spent between two snapshots (a process started meanwhile counts from zero)."""
    spent: Counter[str] = Counter()
    for pid, (group, seconds) in after.items():
        previous = before.get(pid)
        spent[group] += seconds - (previous[1] if previous and previous[0] == group else 0.0)
    return {group: round(seconds, 2) for group, seconds in spent.most_common() if seconds >= 0.01}
