"""The Python worker runs functions on a thread pool, so two timers' first invocations import their handlers
(and the SDKs those load) at the same moment. Python's per-module import locks deadlock when two threads
take the same modules' locks in opposite orders; this races both timers' import paths in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import ROOT
from tests.unit.test_function_app import APP_SETTINGS

# Each thread does what its function's first invocation does up to its first Resource Graph query: import the
# handler module (as functions/<name>/__init__.py does), then build the cloud source the handler builds. The
# first barrier races the handler imports; the second, the loading of the Resource Graph SDK.
RACE = """
import json, sys, threading
from shared.settings import load_settings

settings = load_settings()
barrier = threading.Barrier(2)
errors = []

def alert_intake():
    barrier.wait()
    from shared.app.intake import run_cycle
    from shared.app.writeback import run_writeback  # run_cycle's own first import
    from shared.app.sources import alert_source
    barrier.wait()
    alert_source(settings.intake.sources[0], settings, None).close()

def device_sync_timer():
    barrier.wait()
    from shared.app.devices import run_scheduled_sync
    from shared.app import secret_store
    from shared.app.sources import device_source
    secrets = secret_store(settings)  # build_sync's preamble, then the source it builds
    barrier.wait()
    device_source(settings.device_sync.sources[0], settings, secrets)

def run(path):
    try:
        path()
    except BaseException as exc:
        barrier.abort()
        errors.append(f"{path.__name__}: {type(exc).__name__}: {exc}")

threads = [threading.Thread(target=run, args=(path,)) for path in (alert_intake, device_sync_timer)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"errors": errors, "sdk_loaded": "azure.mgmt.resourcegraph" in sys.modules}))
"""

CLOUD = {
    "name": "cloud",
    "kind": "cloud",
    "subscriptions": ["00000000-0000-0000-0000-000000000001"],
}
ENVIRONMENT = {
    **APP_SETTINGS,
    "DEFENDER_SOURCES": json.dumps([CLOUD]),
    "DEVICE_SYNC_ENABLED": "true",
    "AZURE_CLIENT_ID": "11111111-1111-1111-1111-111111111111",  # as deployed: the managed identity (not called)
}
PROCESSES = 30


def race_once() -> dict[str, object]:
    done = subprocess.run(  # noqa: S603 - this interpreter, our own script
        [sys.executable, "-c", RACE],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), **ENVIRONMENT},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_both_timers_first_imports_race_safely() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: race_once(), range(PROCESSES)))
    failed = [result["errors"] for result in results if result["errors"]]
    assert failed == [], f"{len(failed)} of {PROCESSES} processes failed, e.g. {failed[0]}"
    assert all(result["sdk_loaded"] for result in results)  # the race was the real one: the SDK loaded
