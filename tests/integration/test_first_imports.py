"""The Python worker runs functions on a thread pool, so two timers' first invocations import their handlers
(and the SDKs those load) at the same moment. Python's per-module import locks deadlock when two threads
take the same modules' locks in opposite orders (a submodule's lock is held while its package is imported),
so every import after start-up takes ``late_imports`` (:mod:`shared.platform.imports`). The race in fresh
processes shows it rarely (about one run of the suite in ten, before the lock); what makes it deterministic is
the rule under it: no module is first imported after start-up by a thread that does not hold the lock, and
no import in a function body stands outside ``with late_imports``."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import ROOT
from tests.unit.test_function_app import APP_SETTINGS

# Each thread does what its function's first invocation does up to its first Resource Graph query: import the
# handler module (as functions/<name>/__init__.py does), then build the cloud source the handler builds. The
# first barrier races the handler imports; the second, the loading of the Resource Graph SDK.
RACE = """
import importlib.abc, json, sys, threading
from shared.settings import load_settings
from shared.platform.imports import late_imports

settings = load_settings()
barrier = threading.Barrier(2)
errors = []
unlocked = set()

class Watch(importlib.abc.MetaPathFinder):
    # Asked only for a module not yet loaded: a first import after start-up, by a timer's thread here.
    def find_spec(self, name, path, target=None):
        if threading.current_thread() is not threading.main_thread() and not late_imports._is_owned():
            unlocked.add(name)
        return None

sys.meta_path.insert(0, Watch())

def alert_intake():
    barrier.wait()
    with late_imports:  # as functions/alert_intake does
        from shared.app.intake import run_cycle
    with late_imports:  # as run_cycle does first
        from shared.app.writeback import run_writeback
    from shared.app.sources import alert_source
    barrier.wait()
    alert_source(settings.intake.sources[0], settings, None).close()

def device_sync_timer():
    barrier.wait()
    with late_imports:  # as functions/device_sync_timer does
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
loaded = "azure.mgmt.resourcegraph" in sys.modules
print(json.dumps({"errors": errors, "unlocked": sorted(unlocked), "sdk_loaded": loaded}))
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
    unlocked = sorted({name for result in results for name in result["unlocked"]})  # type: ignore[attr-defined]
    assert unlocked == [], f"first imported after start-up without late_imports: {', '.join(unlocked[:20])}"


def function_body_imports_outside_the_lock(path: Path) -> list[str]:
    """Each import inside a function in ``path`` that no ``with late_imports:`` encloses, as ``path:line``."""
    found = []

    def visit(node: ast.AST, in_function: bool, locked: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom) and in_function and not locked:
                found.append(f"{path.relative_to(ROOT)}:{child.lineno}")
            takes_lock = isinstance(child, ast.With) and any(
                isinstance(item.context_expr, ast.Name) and item.context_expr.id == "late_imports"
                for item in child.items
            )
            function = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, in_function or function, (locked and not function) or takes_lock)

    visit(ast.parse(path.read_text(), str(path)), in_function=False, locked=False)
    return found


def test_every_import_in_a_function_body_takes_the_lock() -> None:
    shared = ROOT / "shared"
    paths = [  # the operator CLI runs on one thread: its terminal-only imports need no lock
        *(ROOT / "functions").rglob("*.py"),
        *(path for path in shared.rglob("*.py") if path.relative_to(shared).parts[0] != "cli"),
    ]
    outside = [place for path in sorted(paths) for place in function_body_imports_outside_the_lock(path)]
    assert outside == [], f"imports after start-up without `with late_imports:`: {outside}"
