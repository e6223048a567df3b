"""A function app for testing the local host: a queue function driven by its message, and a timer.

Message bodies that are JSON objects say what to do: ``{"action": "ok" | "fail" | "sleep" | "sleep_first",
"seconds": n}`` (``sleep_first`` sleeps on the first delivery only).
Every call is recorded in ``CALLS`` (same process) and, when ``SAMPLE_RECORD_FILE`` is set, appended
to that file as a JSON line (a host in another process).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import azure.functions as func

app = func.FunctionApp()
CALLS: list[dict[str, Any]] = []
_lock = threading.Lock()


def record(entry: dict[str, Any]) -> None:
    with _lock:
        CALLS.append(entry)
        path = os.environ.get("SAMPLE_RECORD_FILE")
        if path:
            with open(path, "a", encoding="utf-8") as output:
                output.write(json.dumps(entry) + "\n")


@app.function_name("work")
@app.queue_trigger(arg_name="msg", queue_name="%SAMPLE_QUEUE%", connection="SAMPLE_STORAGE")
def work(msg: func.QueueMessage) -> None:
    body = msg.get_body()
    try:
        spec = json.loads(body)
    except ValueError:
        spec = {}
    spec = spec if isinstance(spec, dict) else {}
    entry = {
        "function": "work",
        "id": msg.id,
        "dequeue_count": msg.dequeue_count,
        "body": body.hex(),
        "queue": os.environ.get("SAMPLE_QUEUE"),
        "tag": spec.get("tag"),
        "start": time.time(),
    }
    if spec.get("action") == "sleep" or (spec.get("action") == "sleep_first" and msg.dequeue_count == 1):
        time.sleep(float(spec.get("seconds", 1)))
    entry["end"] = time.time()
    record(entry)
    if spec.get("action") == "fail":
        raise RuntimeError("told to fail")


@app.function_name("tick")
@app.timer_trigger(arg_name="timer", schedule="%SAMPLE_SCHEDULE%", run_on_startup=False, use_monitor=True)
def tick(timer: func.TimerRequest) -> None:
    status = getattr(timer, "schedule_status", None)  # on the concrete timer.TimerRequest the host passes
    record({"function": "tick", "past_due": timer.past_due, "status": status, "start": time.time()})
    time.sleep(float(os.environ.get("SAMPLE_TICK_SECONDS", "0")))
