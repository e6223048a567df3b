"""The benchmarks' CPU priority for processes that stand in for other machines (tools/machine.py)."""

from __future__ import annotations

import subprocess  # a child to lower: this interpreter, a fixed script  # nosec B404
import sys
import time
from pathlib import Path

import pytest

from tools.machine import lower_priority

# A process with a second thread started before the change and a third started after it.
SCRIPT = """
import sys, threading, time
threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
print("again", flush=True)
time.sleep(30)
"""


def niceness(pid: int) -> list[int]:
    # Field 19 of /proc/<pid>/task/<tid>/stat, counted after the command name's closing parenthesis.
    return sorted(int(t.joinpath("stat").read_text().rsplit(")", 1)[1].split()[16]) for t in tasks(pid))


def tasks(pid: int) -> list[Path]:
    return list(Path(f"/proc/{pid}/task").iterdir())


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="Linux sets niceness per thread")
def test_every_thread_of_the_process_is_lowered_and_a_later_one_too() -> None:
    child = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script  # nosec B603
        [sys.executable, "-c", SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        lower_priority(child.pid, 7)
        assert niceness(child.pid) == [7, 7]
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "again"
        deadline = time.monotonic() + 5
        while len(tasks(child.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert niceness(child.pid) == [7, 7, 7]
    finally:
        child.kill()
        child.wait()
