"""Waiting for Ctrl-C or SIGTERM in a process with worker threads.

CPython runs signal handlers only in the main thread, between bytecodes. A signal may be taken by
any thread; when a worker takes it, CPython only flags it, and a main thread blocked in an untimed
wait is never woken to run the handler — Ctrl-C is lost. So the main thread sleeps in short slices
and looks at the flag between them, whichever thread took the signal. The handler takes no lock:
a handler that sets a ``threading.Event`` can deadlock against the main thread's own ``Event.wait``.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable

SLICE_SECONDS = 0.2


def wait_for_shutdown(signals: Iterable[signal.Signals] = (signal.SIGINT, signal.SIGTERM)) -> signal.Signals:
    """Block until one of ``signals`` arrives; return it. Installs the handlers; call from the main thread."""
    received: list[signal.Signals] = []

    def handler(number: int, _frame: object) -> None:
        received.append(signal.Signals(number))

    for number in signals:
        signal.signal(number, handler)
    while not received:
        time.sleep(SLICE_SECONDS)
    return received[0]
