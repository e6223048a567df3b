"""The Python worker's side of an invocation, with the host's logging and its functionTimeout.

Every invocation (queue and timer) runs on one thread pool of ``PYTHON_THREADPOOL_THREAD_COUNT``
threads, or min(32, CPUs + 4) when it is unset or invalid (the worker's ``dispatcher.py`` passes
None to ``ThreadPoolExecutor``), so with a small pool invocations wait for a thread. As in the host,
an invocation starts (``Executing …``, and its functionTimeout clock) when it is handed to the worker,
not when a thread picks it up. A watchdog logs an invocation that passes functionTimeout as the host
does, fails every invocation then in flight (a queue message is released after ``visibilityTimeout``, or
poisoned at ``maxDequeueCount``: the host reports them failed, Azure/azure-functions-host
``RestartWorkerWithInvocationIdAsync`` and ``TryFailExecutions``) and calls ``on_timeout``: the host
restarts the worker process, which ends them all.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("funchost")
THREAD_COUNT_SETTING = "PYTHON_THREADPOOL_THREAD_COUNT"


def pool_size(settings: Mapping[str, str]) -> int | None:
    """The worker's reading of PYTHON_THREADPOOL_THREAD_COUNT; None is ThreadPoolExecutor's default."""
    value = settings.get(THREAD_COUNT_SETTING)
    if value is None:
        return None
    try:
        count = int(value)
    except ValueError:
        logger.warning("%s must be an integer; using the default", THREAD_COUNT_SETTING)
        return None
    if count < 1:
        logger.warning("%s must be at least 1; using the default", THREAD_COUNT_SETTING)
        return None
    return count


def format_timespan(seconds: float) -> str:
    whole = int(seconds)
    text = f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
    return text if seconds == whole else f"{text}.{round((seconds - whole) * 1000):03d}"


@dataclass
class Invocation:
    id: str
    name: str
    started: float  # time.monotonic() when handed to the worker
    killed: bool = False  # failed at functionTimeout: its own result, if it ever comes, is not acted on
    done: threading.Event = field(default_factory=threading.Event)  # finished, or killed
    then: Callable[[Invocation, bool], None] | None = None  # settles it: once, by the run or the watchdog


def restart_process(invocation: Invocation) -> None:
    """Restart this process with the same command line: every invocation in flight dies unsettled."""
    logger.warning(
        "A function timeout has occurred. Restarting worker process executing invocationId '%s'.", invocation.id
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)  # noqa: S606  # nosec B606  # the same interpreter and arguments


def exit_process(invocation: Invocation) -> None:
    """For a host embedded in another process, which it cannot restart: end it, as a restart would."""
    logger.critical("A function timeout has occurred (invocation '%s'); ending the process", invocation.id)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(70)


class Worker:
    def __init__(
        self,
        max_workers: int | None,
        function_timeout: float | None,
        on_timeout: Callable[[Invocation], None],
        check_every: float = 1.0,
    ) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="worker")
        self.function_timeout = function_timeout
        self.on_timeout = on_timeout
        self.check_every = min(check_every, function_timeout / 4) if function_timeout else check_every
        self.running: dict[str, Invocation] = {}
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.draining = False
        self.active = 0  # pool threads running an invocation, killed ones included
        if function_timeout is not None:
            threading.Thread(target=self._watch, name="functionTimeout", daemon=True).start()

    def submit(
        self,
        name: str,
        function: Callable[..., Any],
        arguments: dict[str, Any],
        reason: str,
        then: Callable[[Invocation, bool], None] | None = None,
    ) -> Invocation:
        """Hand one invocation to the pool; ``then(invocation, succeeded)`` runs once: after it on the same
        thread, or from the watchdog with ``False`` when it passes functionTimeout (the host fails it)."""
        invocation = Invocation(str(uuid.uuid4()), name, time.monotonic(), then=then)
        logger.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", name, reason, invocation.id)
        with self.lock:
            self.running[invocation.id] = invocation

        def run() -> None:
            with self.lock:
                self.active += 1
            try:
                succeeded = self._call(invocation, function, arguments)
                with self.lock:  # taking it off the running list is the claim to settle it
                    mine = self.running.pop(invocation.id, None) is not None
                if mine and then is not None:
                    then(invocation, succeeded)
            finally:
                invocation.done.set()
                with self.lock:
                    self.active -= 1

        self.pool.submit(run)
        return invocation

    def _call(self, invocation: Invocation, function: Callable[..., Any], arguments: dict[str, Any]) -> bool:
        """Call the user function; True on success. Exceptions are logged with their traceback, not raised."""
        try:
            result = function(**arguments)
            if inspect.isawaitable(result):
                asyncio.run(_await(result))
        except Exception:
            _executed(invocation, "Failed", logger.exception)
            return False
        _executed(invocation, "Succeeded", logger.info)
        return True

    def _watch(self) -> None:
        assert self.function_timeout is not None
        while not self.closed.wait(self.check_every):
            now = time.monotonic()
            with self.lock:
                late = next(
                    (i for i in self.running.values() if not i.killed and now - i.started > self.function_timeout),
                    None,
                )
                if late is None:
                    continue
                # The restart takes every invocation on the worker with it, not only the late one.
                failed = list(self.running.values())
                self.running.clear()
            logger.error(
                "Timeout value of %s exceeded by function 'Functions.%s' (Id: '%s'). Initiating cancellation.",
                format_timespan(self.function_timeout),
                late.name,
                late.id,
            )
            for invocation in failed:
                invocation.killed = True
                if invocation.then is not None:
                    invocation.then(invocation, False)
                invocation.done.set()
            if not self.draining:  # a stopping host exits instead: the process end ends them
                self.on_timeout(late)

    def close(self) -> int:
        """Stop the watchdog and the pool; how many invocations are still running on it."""
        self.closed.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            return self.active


def _executed(invocation: Invocation, outcome: str, log: Callable[..., None]) -> None:
    """The host's line for a finished invocation (``logger.exception`` adds the traceback of a failure)."""
    duration = (time.monotonic() - invocation.started) * 1000
    log("Executed 'Functions.%s' (%s, Id=%s, Duration=%.0fms)", invocation.name, outcome, invocation.id, duration)


async def _await(awaitable: Any) -> None:
    await awaitable
