"""`make run`'s stack and the README's `func start` recipe, from outside, as a user runs them.

They run in a copy of the project (its own local.settings.json, .azurite/ and .local/), on the fixed
ports the README names, so they need those ports free.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tools.stack.azurite import port_is_free

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIXED_PORTS = (10000, 10001, 10002, 8443, 8444, 8445, 8446, 8447)


class Output:
    """A process's merged output, read in the background, waited on by content."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        assert process.stdout is not None
        stdout = process.stdout
        self.reader = threading.Thread(target=lambda: self.lines.extend(stdout), daemon=True)
        self.reader.start()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def all(self, timeout: float = 30) -> str:
        """Everything, once the process has exited and its output is read to the end."""
        self.process.wait(timeout=timeout)
        self.reader.join(timeout=timeout)
        return self.text

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            if self.process.poll() is not None:
                raise AssertionError(f"exited without printing {needle!r}; its output:\n{self.all()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"never printed {needle!r}; its output:\n{self.text}")
            time.sleep(0.1)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    busy = [port for port in FIXED_PORTS if not port_is_free(port)]
    if busy:
        pytest.fail(f"ports {busy} are in use (is `make run` running?); the local stack tests need them free")
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("function_app.py", "host.json", "local.settings.json.example"):
        shutil.copy(ROOT / name, copy / name)
    # tools/ is copied (the stack finds the project from its own location); the rest is linked.
    shutil.copytree(ROOT / "tools", copy / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("shared", "functions", "schemas", "examples", "node_modules"):
        (copy / name).symlink_to(ROOT / name)
    return copy


def start(project: Path, *command: str) -> subprocess.Popen[str]:
    """In a process group of its own, as a terminal starts a foreground job."""
    return subprocess.Popen(  # noqa: S603
        [sys.executable, *command],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def ctrl_c(process: subprocess.Popen[str], timeout: float = 30) -> float:
    """The terminal's Ctrl-C (SIGINT to the whole foreground process group); seconds until it exited."""
    started = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    process.wait(timeout=timeout)
    return time.monotonic() - started


@pytest.fixture
def cleanup() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in reversed(processes):
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_ctrl_c_stops_the_stack_in_order_quickly_and_without_errors(
    project: Path, cleanup: list[subprocess.Popen[str]]
) -> None:
    stack = start(project, "-m", "tools.stack.localstack", "--no-demo")
    cleanup.append(stack)
    output = Output(stack)
    output.wait_for("Ctrl-C stops everything.", timeout=120)
    seconds = ctrl_c(stack)
    text = output.all()
    assert stack.returncode == 0, text
    assert "ERROR" not in text and "Traceback" not in text, text
    # The host stopped first (its last storage calls found Azurite), then the rest.
    assert text.index("host | stopping") < text.index("stopped in"), text
    assert seconds < 5, f"the stack took {seconds:.1f} s to stop:\n{text}"
    assert all(port_is_free(port) for port in FIXED_PORTS), "something of the stack is still listening"


def test_the_func_start_recipe_forwards_an_alert(project: Path, cleanup: list[subprocess.Popen[str]]) -> None:
    """`make emulators`, `rules apply`, `func start` (the local host stands in for it), an alert → an incident."""
    emulators = start(project, "-m", "tools.stack.localstack", "--emulators-only")
    cleanup.append(emulators)
    Output(emulators).wait_for("Ctrl-C stops everything.", timeout=120)
    cli = [sys.executable, "-m", "shared", "--settings", "local.settings.json"]
    subprocess.run([*cli, "rules", "apply", "examples/forwarding-rules.yaml"], cwd=project, check=True)  # noqa: S603
    host = start(project, "-m", "tools.funchost")  # what `func start` runs, in the project folder
    cleanup.append(host)
    Output(host).wait_for("local Functions host running", timeout=60)
    alert = {
        "id": 4242,
        "time": int(datetime.now(UTC).timestamp() * 1000),  # raised after the rules were applied
        "title": "Unauthorized PLC Programming",
        "severity": "Critical",
        "engine": "Policy Violation",
    }
    (project / "alert.json").write_text(json.dumps([alert]))
    subprocess.run([*cli, "enqueue", "alert.json", "--sensor", "sensor-1"], cwd=project, check=True)  # noqa: S603
    ca = project / ".local" / "tls" / "ca.pem"
    deadline = time.monotonic() + 60
    incidents: list[dict[str, str]] = []
    while not incidents and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = requests.get("https://localhost:8443/_emulator/tables/incident", verify=str(ca), timeout=5)
        incidents = answer.json()["result"]
    assert [i["short_description"] for i in incidents] == [
        "[Defender for IoT] Critical: Unauthorized PLC Programming (sensor-1)"
    ]
    assert ctrl_c(host) < 10 and ctrl_c(emulators) < 10
    assert host.returncode == 0 and emulators.returncode == 0


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ('{"Values": {"ALERTS_QUEUE": "alerts",}}', "local.settings.json is not valid JSON"),
        ('{"Values": {"ALERTS_QUEUE": "Not A Queue"}}', "ALERTS_QUEUE='Not A Queue' is not a valid queue name"),
    ],
)
def test_bad_local_settings_stop_make_run_with_one_clear_line(
    project: Path, cleanup: list[subprocess.Popen[str]], values: str, expected: str
) -> None:
    (project / "local.settings.json").write_text(values)
    stack = start(project, "-m", "tools.stack.localstack", "--once")
    cleanup.append(stack)
    text = Output(stack).all(timeout=120)
    assert stack.returncode == 2, text
    assert "cannot start the local stack:" in text and "local.settings.json" in text, text
    assert expected in text and "Traceback" not in text, text
    assert all(port_is_free(port) for port in FIXED_PORTS), "the stack did not stop what it had started"


def test_the_demo_plays_the_cloud_path(project: Path, cleanup: list[subprocess.Popen[str]]) -> None:
    """`make demo`: alerts raised in the emulated cloud come in through the intake and become records; a
    sensor offline there becomes an incident; an alert closed there resolves its record."""
    demo = start(project, "-m", "tools.stack.localstack", "--once")
    cleanup.append(demo)
    text = Output(demo).all(timeout=300)
    assert demo.returncode == 0, text
    assert "Critical Unauthorized Internet Connectivity Detected\n    rules major-and-above\n    → incident INC" in text
    assert "System   sensor sensor-plant-c-2 went offline\n    rules sensor-health\n    → incident INC" in text
    # An alert between two of the cloud's devices, after the device sync: its record names the destination's CI
    # (its name and OT class, from the asset index the sync wrote) and that device's open CVEs (issue 25).
    assert re.search(
        r"Unauthorized PLC Program Upload\n    rules major-and-above\n    → incident INC\d+ [^\n]*\n      "
        r"Configuration item: [^\n]+ \(cmdb_ci_ot\w*\)\n      \d+ open CVEs: CVE-\d{4}-\d+",
        text,
    ), text
    assert "Closed in the cloud: Unauthorized Internet Connectivity Detected\n    → INC" in text
    assert "resolved: Alert handled in Microsoft Defender for IoT (close by Microsoft Defender for IoT (cloud))" in text
    # The loop's other half: a record resolved in ServiceNow closes its alert in the cloud.
    assert re.search(r"Resolved in ServiceNow: INC\d+ \(Unauthorized Device Connected to the Network\)", text), text
    assert "→ alert closed in the cloud (Resource Manager; its status is now Closed)" in text
    # The device sync reads the cloud too, and says what Resource Graph cannot provide.
    # (Its counts depend on whether the host's own sync timer ticked first: its schedule is wall-clock.)
    assert re.search(r"Device sync from source 'cloud' \(cloud\) finished in [\d.]+ s", text), text
    assert re.search(r"CMDB now: 2\d\d OT devices", text), text
    assert "note: connections: Resource Graph has no device connections" in text
    # It ends with `status`, where the demo's poisoned message shows.
    assert "Status (`python -m shared --settings local.settings.json status`):" in text, text
    assert re.search(r"\n    WARN queue \S+-poison: [1-9]\d* message\(s\); the newest: ", text), text
    assert "Traceback" not in text, text
    # The one ERROR is the demo's malformed message, poisoned as it should be.
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "poisoned: invalid message: alert.title: required" in errors[0], errors
