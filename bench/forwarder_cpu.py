"""The forwarder's own CPU per alert, two commits against each other, interleaved in one run.

bench.overheads measures the whole host (its dispatch, its queue polling, Azurite beside it) one commit after
the other, so on a shared machine a load that comes and goes lands on one side. This measures only the
product's code on the path of one alert: ``Forwarder.handle`` in a child process whose ``shared`` is the
commit's (a git worktree), its CPU time (``time.process_time``) around the loop only, against one Azurite and
one ServiceNow emulator (0 ms latency) in the parent, which the child's CPU does not include. The rounds
alternate the two commits (ABBA…), and the figure is each commit's median over the rounds.

Per child and round, N alerts (default 300) three ways: **new** (one record each), **redelivered** (the same
messages again: duplicates, no ServiceNow call) and **repeat** (the same alerts under new delivery ids: a work
note each). The Python function calls the same three ways take are counted too, under cProfile on a second
set of 50 alerts: a figure the machine's load cannot move. ServiceNow calls per alert are the emulator's count
(Azurite's requests are bench.overheads').

Run: `.venv/bin/python -m bench.forwarder_cpu [--before main] [--after HEAD] [--alerts 300] [--rounds 6]`;
writes bench/results/forwarder_cpu.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess  # git worktrees and the children  # nosec B404
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.forwarding import PASSWORD, RULES, USER, product_environ
from bench.overheads import checkout
from shared.alerting.rules_store import write_rules
from shared.contract.model import SCHEMA
from shared.platform.storage import blob_service
from shared.settings import load_settings
from tools.emulators.servicenow import ServiceNowEmulator
from tools.machine import describe
from tools.stack.appstack import ROOT
from tools.stack.azurite import start_azurite

RESULTS = Path(__file__).parent / "results" / "forwarder_cpu.md"
KINDS = ("new", "redelivered", "repeat")

# Uses only what both commits have: load_settings, build_forwarder, Forwarder.handle.
CHILD = """
import cProfile, json, logging, pstats, sys, time, uuid
logging.disable(logging.WARNING)
from shared.app.forwarding import build_forwarder
from shared.settings import load_settings

spec = json.loads(sys.stdin.read())
forwarder = build_forwarder(load_settings(spec["environ"]))
figures = {}

def three(bodies, measure):
    first = [uuid.uuid4().hex for _ in bodies]
    for kind, ids in (("new", first), ("redelivered", first), ("repeat", [uuid.uuid4().hex for _ in bodies])):
        figures[measure + kind] = run(bodies, ids, measure)

def run(bodies, ids, measure):
    profile = cProfile.Profile() if measure == "calls_" else None
    started = time.process_time()
    if profile: profile.enable()
    for body, message_id in zip(bodies, ids):
        result = forwarder.handle(body, message_id)
        assert result.status == "forwarded", result.reason
    if profile:
        profile.disable()
        return pstats.Stats(profile).total_calls / len(bodies)
    return (time.process_time() - started) / len(bodies) * 1000

three([body.encode() for body in spec["bodies"]], "")
three([body.encode() for body in spec["counted"]], "calls_")  # a second set of alerts, under the profiler
print(json.dumps(figures))
"""


def bodies(count: int, run: str) -> list[str]:
    return [
        json.dumps(
            {
                "schema": SCHEMA,
                "kind": "alert",
                "sensor": {"name": f"sensor-{run}", "id": run, "site": "Plant A"},
                "alert": {
                    "id": i,
                    "time": 1763762400000 + i,
                    "title": "Illegal MODBUS Operation",
                    "severity": "Major",
                    "engine": "Protocol Violation",
                    "message": "Exception raised by master",
                },
            }
        )
        for i in range(count)
    ]


def measure(tree: Path, azurite: Any, emulator: ServiceNowEmulator, count: int) -> dict[str, float]:
    settings = product_environ(emulator, azurite)
    loaded = load_settings(settings)
    write_rules(loaded.forwarding.rules_location, blob_service(loaded.alerts_storage), RULES)
    before = emulator.stats["requests"]
    spec = {
        "environ": settings,
        "bodies": bodies(count, uuid.uuid4().hex[:8]),
        "counted": bodies(50, uuid.uuid4().hex[:8]),
    }
    result = subprocess.run(  # noqa: S603 - this interpreter on our own child script  # nosec B603
        [sys.executable, "-c", CHILD],
        input=json.dumps(spec),
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree), "SERVICENOW_DEFAULT_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if result.returncode:
        raise RuntimeError(f"child in {tree} failed: {result.stderr[-3000:]}")
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    figures["servicenow_calls"] = (emulator.stats["requests"] - before) / ((count + 50) * len(KINDS))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default="main")
    parser.add_argument("--after", default="HEAD")
    parser.add_argument("--alerts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    azurite = start_azurite()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        trees = {"before": checkout(scratch, args.before, "before"), "after": checkout(scratch, args.after, "after")}
        emulator = ServiceNowEmulator(tls_dir=scratch / "tls", users={USER: PASSWORD}).start()
        try:
            for round_ in range(args.rounds):
                order = ("before", "after") if round_ % 4 in (0, 3) else ("after", "before")  # ABBA
                for name in order:
                    runs[name].append(measure(trees[name], azurite, emulator, args.alerts))
        finally:
            emulator.stop()
            azurite.stop()
            for tree in trees.values():
                subprocess.run(  # noqa: S603 - git on this repository  # nosec B603 B607
                    ["git", "worktree", "remove", "--force", str(tree)],  # noqa: S607
                    cwd=ROOT,
                    check=False,
                    capture_output=True,
                )
    median = {name: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for name, rows in runs.items()}
    rows = [
        f"| CPU per alert, {kind} | {median['before'][kind]:.3f} ms | {median['after'][kind]:.3f} ms | "
        f"{median['after'][kind] / median['before'][kind]:.2f} |"
        for kind in KINDS
    ]
    calls = {name: {kind: median[name]["calls_" + kind] for kind in KINDS} for name in median}
    rows += [
        f"| Python function calls per alert, {kind} (cProfile: no noise) | {calls['before'][kind]:.0f} | "
        f"{calls['after'][kind]:.0f} | {calls['after'][kind] / calls['before'][kind]:.3f} |"
        for kind in KINDS
    ]
    rows.append(
        f"| ServiceNow calls per alert (all three) | {median['before']['servicenow_calls']:.3f} | "
        f"{median['after']['servicenow_calls']:.3f} | |"
    )
    spread = {
        name: ", ".join(f"{r['new']:.2f}" for r in rows_) for name, rows_ in runs.items()
    }  # the new-alert figure of every round, to show the noise
    options = [f"--before {args.before}", f"--after {args.after}"]
    options += [f"--alerts {args.alerts}"] if args.alerts != 300 else []
    options += [f"--rounds {args.rounds}"] if args.rounds != 6 else []
    text = "\n".join(
        [
            "# The forwarder's own CPU per alert, two commits interleaved",
            "",
            f"Produced by `.venv/bin/python -m bench.forwarder_cpu {' '.join(options)}`.",
            "",
            describe(),
            f"{args.rounds} rounds, the commits alternating ABBA; per round and commit a child process forwards "
            f"{args.alerts} alerts new, then redelivered, then repeated, against Azurite and the ServiceNow emulator "
            "(0 ms latency) in the parent. CPU: the child's process time around each loop, ÷ alerts; the median "
            "over the rounds.",
            "",
            f"| per alert | before (`{args.before}`) | after (`{args.after}`) | after ÷ before |",
            "|---|---|---|---|",
            *rows,
            "",
            f"New-alert CPU per round, before: {spread['before']} ms; after: {spread['after']} ms.",
            "",
        ]
    )
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
