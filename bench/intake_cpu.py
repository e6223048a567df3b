"""The alert intake's own CPU per message, two commits against each other, interleaved in one run.

The path measured is the product's code between a source's records and the queue: the cloud source's parse of
each Resource Graph row (``parse_alert``) and ``Intake.run`` — which alerts are new or closed, their
messages written (and, before issue 24 item 5, validated by parsing them back) and handed to the queue.
Each commit's tree (``git archive``, nothing checked out) runs in a child process: a source that serves
the same N rows (default 500) each read, an in-memory intake state and a queue that only counts what it is
sent, so that the child's process time (``time.process_time``, around the cycle only) is the intake's.
Two cycles per child: **new** (N open alerts: an ``alert`` message each) and **closed** (the same alerts
closed at the source: an ``alert_status`` message each). The Python function calls of the same two cycles
are counted under cProfile: a figure the machine's load cannot move. The rounds alternate the commits (ABBA…);
the figure is each commit's median.

Run: `.venv/bin/python -m bench.intake_cpu [--before main] [--after HEAD] [--alerts 500] [--rounds 10]`;
writes bench/results/intake_cpu.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess  # git archive and the children  # nosec B404
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from tools.machine import describe
from tools.stack.appstack import ROOT

RESULTS = Path(__file__).parent / "results" / "intake_cpu.md"
KINDS = ("new", "closed")
LABELS = {"new": "CPU per message, new", "closed": "CPU per message, closed", "parse": "the forwarder's parse of each"}

# Uses only what both commits have (parse_message where each has it): the cloud's parse_alert, Intake and
# the IntakeStore protocol's methods.
CHILD = """
import base64, cProfile, dataclasses, hashlib, json, pstats, sys, time
from datetime import UTC, datetime
from shared.alerting.intake import Intake
try:
    from shared.contract.parse import parse_message
except ImportError:  # a commit from before the contract's own package
    from shared.alerting.messages import parse_message
from shared.defender import cloud

spec = json.loads(sys.stdin.read())
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

class Source:
    name = "cloud"
    def __init__(self, rows): self.rows = rows
    def alerts(self, report): return iter([cloud.parse_alert(row, self.name) for row in self.rows])
    def open_alerts(self, report):
        return self.alerts(report) if self.rows[0]["properties"]["status"] != "Closed" else iter([])
    def alerts_started_since(self, since, report): return self.alerts(report)
    def sensor_statuses(self, report): return []
    def close(self): pass

class State:
    def __init__(self): self.data = {}
    def ensure(self): pass
    def rows(self, source, kind, *, state=None):
        found = self.data.get((source, kind), {})
        return {k: dict(v) for k, v in found.items() if state is None or v.get("state") == state}
    def get(self, source, kind, key):
        row = self.data.get((source, kind), {}).get(key)
        return dict(row) if row is not None else None
    def put(self, source, kind, rows):
        table = self.data.setdefault((source, kind), {})
        for row in rows: table[str(row["RowKey"])] = {**table.get(str(row["RowKey"]), {}), **row}
    def watermark(self, source):
        row = self.get(source, "watermark", "alerts")
        return datetime.fromisoformat(row["value"]) if row else None
    def set_watermark(self, source, value):
        self.put(source, "watermark", [{"RowKey": "alerts", "value": value.isoformat()}])

class Sent:
    id = "m"

class Queue:
    def __init__(self): self.sent = []
    def send_message(self, content):
        self.sent.append(content)
        return Sent()

def closed(rows):
    return [{**row, "properties": {**row["properties"], "status": "Closed"}} for row in rows]

def cycles(rows, profile, documents):
    state, figures = State(), {}
    for kind, served in (("new", rows), ("closed", closed(rows))):
        queue = Queue()
        intake = Intake(Source(served), queue, state)
        profiler = cProfile.Profile() if profile else None
        started = time.process_time()
        if profiler: profiler.enable()
        result = intake.run(NOW)
        if profiler: profiler.disable()
        elapsed = time.process_time() - started
        sent = len(queue.sent)
        assert sent == len(rows) and not result.skipped, (sent, result.skipped[:3])
        figures[kind] = pstats.Stats(profiler).total_calls / sent if profiler else elapsed / sent * 1000
        figures["bytes_" + kind] = sum(map(len, queue.sent)) / sent
        documents += [base64.b64decode(content) for content in queue.sent]
    return figures

bodies = []
figures = cycles(spec["rows"], False, bodies)
calls = cycles(spec["rows"][:100], True, [])
figures.update({"calls_" + k: calls[k] for k in ("new", "closed")})
# The forwarder's reading of the same bodies, the message's one parse (three times over, for a steadier figure).
started = time.process_time()
for _ in range(3):
    for body in bodies:
        parse_message(body)
figures["parse"] = (time.process_time() - started) / (3 * len(bodies)) * 1000
documents = [json.loads(body) for body in bodies]

def digest(items):
    text = "\\n".join(sorted(json.dumps(i, sort_keys=True, default=str) for i in items))
    return hashlib.sha256(text.encode()).hexdigest()[:16]

# The message as the forwarder reads it: its typed parts (an alert_status's time is the reader's now).
def parsed(document):
    message = dataclasses.asdict(parse_message(json.dumps(document).encode()))
    message.pop("raw")
    if message["alert"] is not None:
        message["alert"].pop("extra", None)
        if message["kind"] == "alert_status":
            message["alert"].pop("time")
    return message

# What was queued: the documents (JSON, sorted keys), and the messages the forwarder parses from them.
figures["documents"] = digest(documents)
figures["parsed"] = digest([parsed(d) for d in documents])
figures["first"] = documents[0]
print(json.dumps(figures))
"""


def rows(count: int) -> list[dict[str, Any]]:
    """Resource Graph alert rows as the cloud source reads them, each naming its sensor and two devices."""
    found = []
    for number in range(count):
        name = f"00000000-0000-4000-8000-{number:012d}"
        group = "/subscriptions/s/providers/Microsoft.IoTSecurity/locations/westeurope/deviceGroups/default"
        found.append(
            {
                "id": f"{group}/alerts/{name}",
                "name": name,
                "type": "microsoft.iotsecurity/locations/devicegroups/alerts",
                "properties": {
                    "displayName": f"Unauthorized PLC Programming {number}",
                    "description": "A device programmed the PLC.",
                    "severity": "High",
                    "status": "New",
                    "startTimeUtc": f"2026-11-22T11:{number // 60 % 60:02d}:{number % 60:02d}.{number % 1000:03d}Z",
                    "alertType": "IoT_PolicyViolation",
                    "productComponentName": "POLICY_VIOLATION",
                    "remediationSteps": ["Check the engineering station", "Review the PLC's program"],
                    "extendedProperties": {
                        "SensorId": "sensor-bench",
                        "SourceDeviceAddress": "10.1.0.5",
                        "DestinationDeviceAddress": "10.1.0.9",
                        "Protocol": "Modbus",
                        "DeviceResourceIds": [f"{group}/devices/d-{number}-a", f"{group}/devices/d-{number}-b"],
                        "AlertManagementUri": f"https://portal.azure.com/#alerts/{name}",
                    },
                },
            }
        )
    return found


def export(ref: str, into: Path) -> Path:
    """The commit's files (``git archive``): no worktree, nothing in the repository changes."""
    archive = subprocess.run(  # noqa: S603 - git on this repository  # nosec B603 B607
        ["git", "archive", "--format=tar", ref],  # noqa: S607
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(tree: Path, spec: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(  # noqa: S603 - this interpreter on our own child script  # nosec B603
        [sys.executable, "-c", CHILD],
        input=json.dumps(spec),
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if result.returncode:
        raise RuntimeError(f"child in {tree} failed: {result.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def flat(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in flat(item, f"{path}.{key}" if path else key).items()}
    return {path: value}


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The fields in which the first message queued differs between the commits, as a list."""
    old, new = flat(before), flat(after)
    changed = [
        f"- `{path}`: {json.dumps(old.get(path))} → {json.dumps(new.get(path))}"
        for path in sorted(old.keys() | new.keys())
        if old.get(path, ...) != new.get(path, ...)
    ]
    return ["The first message queued, field by field, where the commits differ:", "", *changed, ""] if changed else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="main")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--alerts", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    spec = {"rows": rows(args.alerts)}
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as folder:
        trees = {name: export(getattr(args, name), Path(folder) / name) for name in runs}
        for round_ in range(args.rounds):
            for name in ("before", "after") if round_ % 4 in (0, 3) else ("after", "before"):  # ABBA
                runs[name].append(measure(trees[name], spec))
    digests = {name: {r.pop("documents") for r in rows_} for name, rows_ in runs.items()}
    readings = {name: {r.pop("parsed") for r in rows_} for name, rows_ in runs.items()}
    firsts = {name: [r.pop("first") for r in rows_] for name, rows_ in runs.items()}  # each round's first, alike
    median = {name: {k: statistics.median(r[k] for r in rows_) for k in rows_[0]} for name, rows_ in runs.items()}
    lines = [
        f"| {label} | {median['before'][kind]:.3f} ms | {median['after'][kind]:.3f} ms | "
        f"{median['after'][kind] / median['before'][kind]:.2f} |"
        for kind, label in LABELS.items()
    ]
    calls = {name: {kind: median[name]["calls_" + kind] for kind in KINDS} for name in median}
    lines += [
        f"| Python function calls per message, {kind} (cProfile: no noise) | {calls['before'][kind]:.0f} | "
        f"{calls['after'][kind]:.0f} | {calls['after'][kind] / calls['before'][kind]:.3f} |"
        for kind in KINDS
    ]
    lines += [
        f"| bytes per queued message, {kind} (base64) | {median['before']['bytes_' + kind]:.0f} | "
        f"{median['after']['bytes_' + kind]:.0f} | |"
        for kind in KINDS
    ]
    spread = {name: ", ".join(f"{r['new']:.3f}" for r in rows_) for name, rows_ in runs.items()}
    options = [f"--before {args.before}", f"--after {args.after}"]
    options += [f"--alerts {args.alerts}"] if args.alerts != 500 else []
    options += [f"--rounds {args.rounds}"] if args.rounds != 10 else []
    text = "\n".join(
        [
            "# The alert intake's own CPU per message, two commits interleaved",
            "",
            f"Produced by `.venv/bin/python -m bench.intake_cpu {' '.join(options)}`.",
            "",
            describe(),
            f"{args.rounds} rounds, the commits alternating ABBA; per round and commit a child process runs two intake "
            f"cycles over {args.alerts} cloud alert rows (parse_alert and Intake.run): new (an alert message each), "
            "then closed (an alert_status message each), against an in-memory state and a counting queue; then the "
            "forwarder's parse (`parse_message`) of every body queued. CPU: the child's process time around each "
            "cycle (and around the parses), ÷ messages; the median over the rounds.",
            "",
            f"| per message | before (`{args.before}`) | after (`{args.after}`) | after ÷ before |",
            "|---|---|---|---|",
            *lines,
            "",
            f"New-alert CPU per round, before: {spread['before']} ms; after: {spread['after']} ms.",
            "",
            "What was queued, every body of every round (SHA-256 of the sorted list): the messages as the forwarder "
            f"parses them, before {', '.join(sorted(readings['before']))}, "
            f"after {', '.join(sorted(readings['after']))} "
            + ("(the same)" if readings["before"] == readings["after"] else "(they differ)")
            + f"; the documents as JSON, before {', '.join(sorted(digests['before']))}, after "
            f"{', '.join(sorted(digests['after']))} "
            + ("(the same)." if digests["before"] == digests["after"] else "(they differ: see below)."),
            "",
            *differences(firsts["before"][0], firsts["after"][0]),
        ]
    )
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
