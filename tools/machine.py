"""The machine description written at the top of every benchmark result."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path


def describe() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kib = int(meminfo.read_text().split()[1])
        memory = f", {kib / 1024 / 1024:.0f} GiB"
    return (
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"- machine: {os.cpu_count()} cores ({cpu}){memory}, {platform.system()} {platform.release()}\n"
        f"- python: {sys.version.split()[0]}\n"
    )


def lower_priority(pid: int, nice: int) -> None:
    """Every thread of ``pid`` at CPU niceness ``nice`` (Linux sets it per thread; a thread started later
    takes its starter's). A benchmark that stands other machines' work in on this one runs it so: it gets
    what the measured process leaves, not a share of that process's core."""
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir() if tasks.exists() else []:
        try:
            os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
