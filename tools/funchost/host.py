"""The local Functions host stand-in: loads function_app.py and runs its triggers against Azurite.

Functions and triggers come from the library's own binding metadata (``app.get_functions()``), so
there is no second registration list to drift; ``%SETTING%`` expressions resolve from
local.settings.json, which is also put in the environment before the app is imported (as ``func
start`` does), so the app validates the same settings it will run with. Every invocation runs on one
worker (``invoke.Worker``): a pool of ``PYTHON_THREADPOOL_THREAD_COUNT`` threads and host.json's
``functionTimeout``, whose passing calls ``on_timeout`` (the command line restarts the process).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import azure.functions as func
from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobServiceClient
from azure.storage.blob import ExponentialRetry as BlobRetry
from azure.storage.queue import ExponentialRetry as QueueRetry
from azure.storage.queue import QueueClient, QueueServiceClient

from shared.platform.ncrontab import Schedule, ScheduleError
from shared.platform.storage import pooled_session
from tools.funchost.config import (
    HostConfigError,
    QueueOptions,
    function_timeout,
    resolve,
    storage_connection_string,
)
from tools.funchost.invoke import Invocation, Worker, exit_process, pool_size
from tools.funchost.queues import QueueListener, QueueTimings
from tools.funchost.timers import HOSTS_CONTAINER, TimerListener, TimerTimings, fires_more_than_once_a_minute

logger = logging.getLogger("funchost")
SUPPORTED_TRIGGERS = ("queueTrigger", "timerTrigger")


class Listener(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


def load_app(app_dir: Path, settings: Mapping[str, str], script: str = "function_app.py") -> func.FunctionApp:
    """Import the app the way the worker does: settings in the environment, app dir on sys.path."""
    path = app_dir / script
    if not path.exists():
        raise HostConfigError(f"{path} not found")
    os.environ.update(settings)
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    apps = [value for value in vars(module).values() if isinstance(value, func.FunctionApp)]
    if len(apps) != 1:
        raise HostConfigError(f"{path} must define exactly one top-level FunctionApp; found {len(apps)}")
    return apps[0]


def default_host_id(app_dir: Path) -> str:
    """Stable per app folder, lower-case, at most 32 characters (like the host's own id)."""
    return "local-" + hashlib.sha256(str(app_dir.resolve()).encode()).hexdigest()[:26]


@dataclass
class FunctionHost:
    app: func.FunctionApp
    settings: Mapping[str, str]
    host_json: Mapping[str, Any]
    host_id: str
    queue_timings: QueueTimings = field(default_factory=QueueTimings)
    timer_timings: TimerTimings = field(default_factory=TimerTimings)
    # An embedded host cannot restart its process as the host restarts the worker; it ends it instead.
    on_timeout: Callable[[Invocation], None] = exit_process
    listeners: dict[str, Listener] = field(default_factory=dict)
    worker: Worker | None = None

    def build(self) -> FunctionHost:
        options = QueueOptions.from_host_json(self.host_json, os.cpu_count() or 1)
        self.worker = Worker(pool_size(self.settings), function_timeout(self.host_json), self.on_timeout)
        self.app.functions_bindings = None  # get_functions() may be called once per app otherwise
        for function in self.app.get_functions():
            name = str(function.get_function_name())
            trigger = function.get_trigger()
            extra = [b for b in function.get_bindings() if b is not trigger]
            if trigger is None or trigger.type not in SUPPORTED_TRIGGERS:
                kind = getattr(trigger, "type", "none")
                raise HostConfigError(
                    f"function '{name}': trigger type '{kind}' is not supported by the local host "
                    f"(supported: {', '.join(SUPPORTED_TRIGGERS)})"
                )
            if extra:
                raise HostConfigError(
                    f"function '{name}': bindings {[b.type for b in extra]} are not supported by "
                    "the local host (triggers only)"
                )
            user_function = function.get_user_function()
            if trigger.type == "queueTrigger":
                self.listeners[name] = self._queue_listener(name, user_function, trigger, options)
            else:
                self.listeners[name] = self._timer_listener(name, user_function, trigger)
        return self

    def _queue_listener(self, name: str, user_function: Any, trigger: Any, options: QueueOptions) -> QueueListener:
        where = f"function '{name}'"
        queue_name = resolve(trigger.queue_name, self.settings, where)
        connection = storage_connection_string(self.settings, trigger.connection or "AzureWebJobsStorage")
        # Up to batchSize + newBatchThreshold invocations settle messages at once: size the pool for them.
        service = QueueServiceClient.from_connection_string(
            connection,
            session=pooled_session(options.batch_size + options.new_batch_threshold + 2),
            retry_policy=local_retry(),
        )
        queue = service.get_queue_client(queue_name)
        # A quick check client: an unreachable account should fail start-up in seconds, not minutes of retries.
        ensure_queue(
            QueueClient.from_connection_string(connection, queue_name, retry_total=0, connection_timeout=3), where
        )
        return QueueListener(
            name,
            user_function,
            trigger.name,
            queue,
            service.get_queue_client(f"{queue_name}-poison"),
            options,
            self._worker(),
            self.queue_timings,
        )

    def _timer_listener(self, name: str, user_function: Any, trigger: Any) -> TimerListener:
        where = f"function '{name}'"
        expression = resolve(trigger.schedule, self.settings, where)
        try:
            schedule = Schedule.parse(expression)
            schedule.next_after(datetime.now(UTC))
        except ScheduleError as exc:
            raise HostConfigError(f"{where}: schedule '{expression}' is invalid: {exc}") from None
        connection = storage_connection_string(self.settings, "AzureWebJobsStorage")
        container = BlobServiceClient.from_connection_string(
            connection, retry_policy=local_retry()
        ).get_container_client(HOSTS_CONTAINER)
        use_monitor = True if trigger.use_monitor is None else bool(trigger.use_monitor)
        if use_monitor and fires_more_than_once_a_minute(schedule, datetime.now(UTC)):
            logger.debug("%s: useMonitor changed to false based on schedule frequency", name)
            use_monitor = False
        return TimerListener(
            name,
            user_function,
            trigger.name,
            schedule,
            run_on_startup=bool(trigger.run_on_startup),
            use_monitor=use_monitor,
            container=container,
            host_id=self.host_id,
            worker=self._worker(),
            timings=self.timer_timings,
        )

    def _worker(self) -> Worker:
        assert self.worker is not None, "build() creates the worker"
        return self.worker

    def start(self) -> None:
        for name, listener in self.listeners.items():
            listener.start()
            logger.info("listening: %s", name)

    def stop(self) -> int:
        """Stop every listener, each waiting for its running invocations; how many were left running."""
        worker = self._worker()
        worker.draining = True
        for listener in self.listeners.values():
            listener.stop()
        return worker.close()


def local_retry(kind: type[QueueRetry] | type[BlobRetry] = QueueRetry) -> QueueRetry | BlobRetry:
    """Short back-offs against local storage: the SDK's default waits 15 s and more per retry, which would
    stall a Ctrl-C for a minute on one hiccup of a busy Azurite."""
    return kind(initial_backoff=1, increment_base=2, retry_total=3)


def ensure_queue(queue: QueueClient, where: str) -> None:
    """Create the trigger's queue if missing; an unreachable storage account stops start-up clearly."""
    try:
        queue.create_queue()
    except ResourceExistsError:
        pass
    except HttpResponseError as exc:
        if "x-ms-version" in str(exc).lower() or "api version" in str(exc).lower():
            raise HostConfigError(
                f"{where}: the storage emulator at {queue.url.rsplit('/', 1)[0]} refuses the storage SDK's API "
                "version; start Azurite with --skipApiVersionCheck (`make emulators` does)"
            ) from None
        raise HostConfigError(
            f"{where}: queue storage at {queue.url.rsplit('/', 1)[0]} refused to create the queue: "
            f"HTTP {exc.status_code} {exc.reason}"
        ) from None
    except AzureError as exc:
        raise HostConfigError(
            f"{where}: cannot reach queue storage at {queue.url.rsplit('/', 1)[0]} "
            f"({type(exc).__name__}); is Azurite running? `make run` starts it"
        ) from None
