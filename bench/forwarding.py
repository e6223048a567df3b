"""Benchmark alert forwarding against the ServiceNow emulator, beside a straightforward PySNC forwarder.

Both forward the same alerts one at a time (one function invocation each) to the emulator with 0 ms
and 50 ms added latency, first as new alerts, then redelivered (the same messages again):

- the product: ``Forwarder.handle`` (ledger in Azurite, one ServiceNow call for a new alert, none
  for a redelivery);
- PySNC, the obvious way: query ``incident`` by correlation_id, insert when nothing is found.

Also: rule-evaluation cost per alert with 100 rules. Run: `.venv/bin/python -m bench.forwarding`;
writes bench/results/forwarding.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pysnc import ServiceNowClient as PySncClient

from shared.alerting.records import correlation_id, record_values
from shared.alerting.rules import evaluate, parse_rules
from shared.alerting.rules_store import write_rules
from shared.app.forwarding import build_forwarder
from shared.contract.model import SCHEMA
from shared.contract.parse import parse_message
from shared.platform.storage import blob_service
from shared.settings import load_settings
from tools.emulators.servicenow import ServiceNowEmulator
from tools.machine import describe
from tools.stack.azurite import start_azurite

USER, PASSWORD = "bench", "Bench-Passw0rd"
RESULTS = Path(__file__).parent / "results" / "forwarding.md"
RULES = {
    "actions": [{"name": "incident", "connection": "default", "report": "incident"}],
    "rules": [{"name": "all", "created_at": "2025-01-01T00:00:00+00:00", "actions": ["incident"]}],
}


def alerts(count: int, run: str) -> list[bytes]:
    return [
        json.dumps(
            {
                "schema": SCHEMA,
                "kind": "alert",
                "sensor": {"name": f"sensor-{run}", "id": run},
                "alert": {
                    "id": i,
                    "time": 1763762400000 + i,
                    "title": "Illegal MODBUS Operation",
                    "severity": "Major",
                    "engine": "Protocol Violation",
                    "message": "x",
                },
            }
        ).encode()
        for i in range(count)
    ]


def product_environ(emulator: ServiceNowEmulator, azurite: Any) -> dict[str, str]:
    """The app settings of a forwarder on this Azurite and emulator, with its rules in blob storage (as deployed)."""
    return {
        "ALERTS_QUEUE": f"bench{uuid.uuid4().hex[:10]}",
        "ALERTS_STORAGE": azurite.connection_string,
        "TOKEN_REFRESH_SCHEDULE": "0 */10 * * * *",  # a schedule, not a password  # nosec B105
        "DEVICE_SYNC_SCHEDULE": "0 */5 * * * *",
        "ALERT_INTAKE_SCHEDULE": "0 */1 * * * *",
        "SERVICENOW_CONNECTIONS": json.dumps(
            [{"name": "default", "instance_url": emulator.url, "auth": "basic", "username": USER}]
        ),
        "SERVICENOW_CA_BUNDLE": str(emulator.ca_pem),
        # Blob rules, as main.bicep deploys them.
        "FORWARDING_RULES_LOCATION": f"rules{uuid.uuid4().hex[:10]}/forwarding-rules.json",
        "FORWARDING_LEDGER_TABLE": f"ledger{uuid.uuid4().hex[:12]}",
    }


def product(emulator: ServiceNowEmulator, azurite: Any, bodies: list[bytes]) -> list[tuple[float, float]]:
    environ = product_environ(emulator, azurite)
    os.environ["SERVICENOW_DEFAULT_PASSWORD"] = PASSWORD
    settings = load_settings(environ)
    write_rules(settings.forwarding.rules_location, blob_service(settings.alerts_storage), RULES)
    forwarder = build_forwarder(settings)
    ids = [uuid.uuid4().hex for _ in bodies]
    rows = []
    for _ in ("new", "redelivered"):
        before = emulator.stats["requests"]
        started = time.perf_counter()
        for body, message_id in zip(bodies, ids, strict=True):
            result = forwarder.handle(body, message_id)
            assert result.status == "forwarded", result.reason
        elapsed = time.perf_counter() - started
        rows.append((len(bodies) / elapsed, (emulator.stats["requests"] - before) / len(bodies)))
    return rows


def pysnc(emulator: ServiceNowEmulator, bodies: list[bytes]) -> list[tuple[float, float]]:
    client = PySncClient(emulator.url, (USER, PASSWORD), verify=str(emulator.ca_pem))
    action = parse_rules(RULES).actions["incident"]
    rows = []
    for _ in ("new", "redelivered"):
        before = emulator.stats["requests"]
        started = time.perf_counter()
        for body in bodies:
            message = parse_message(body)
            gr = client.GlideRecord("incident")
            gr.add_query("correlation_id", correlation_id(message, action))
            gr.query()
            if not gr.next():
                new = client.GlideRecord("incident")
                new.initialize()
                for name, value in record_values(message, action).items():
                    new.set_value(name, value)
                new.insert()
        elapsed = time.perf_counter() - started
        rows.append((len(bodies) / elapsed, (emulator.stats["requests"] - before) / len(bodies)))
    return rows


def rule_cost(count: int = 100, alerts_count: int = 2000) -> float:
    engines = ["Protocol Violation", "Policy Violation", "Malware", "Anomaly", "Operational"]
    document = {
        "actions": [{"name": f"a{i}", "connection": "default", "report": "incident"} for i in range(10)],
        "rules": [
            {
                "name": f"rule-{i}",
                "created_at": "2025-01-01T00:00:00+00:00",
                "minimal_severity": ["Warning", "Minor", "Major", "Critical"][i % 4],
                "engines": [engines[i % 5]],
                "protocols": ["MODBUS", "DNP3", f"P{i}"] if i % 3 else "all",
                "zones": ["Line 1", f"Z{i}"] if i % 2 else "all",
                "actions": [f"a{i % 10}"],
            }
            for i in range(count)
        ],
    }
    rules = parse_rules(document)
    messages = [
        parse_message(
            json.dumps(
                {
                    "schema": SCHEMA,
                    "kind": "alert",
                    "sensor": {"name": "s", "zone": "Line 1"},
                    "alert": {
                        "id": i,
                        "time": 1763762400000,
                        "title": "Illegal MODBUS Operation",
                        "severity": "Major",
                        "engine": engines[i % 5],
                        "message": "An illegal function code over DNP3 " * 10,
                    },
                }
            ).encode()
        )
        for i in range(alerts_count)
    ]
    started = time.perf_counter()
    for message in messages:
        evaluate(rules, message)
    return (time.perf_counter() - started) / alerts_count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=200, help="alerts per run at 0 ms (a quarter at 50 ms)")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    # PySNC's requests session would let these override the CA it is given (the product ignores them).
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)
    azurite = start_azurite()
    ratios: dict[tuple[int, str], float] = {}
    table = [
        "| latency | delivery | product alerts/s | product SN calls/alert | PySNC alerts/s | PySNC SN calls/alert "
        "| product / PySNC throughput |",
        "|---|---|---|---|---|---|---|",
    ]
    try:
        with tempfile.TemporaryDirectory() as scratch:
            emulator = ServiceNowEmulator(tls_dir=Path(scratch) / "tls", users={USER: PASSWORD}).start()
            try:
                for latency, count in ((0, args.alerts), (50, max(20, args.alerts // 4))):
                    emulator.faults.configure({"latency_ms": latency})
                    ours = product(emulator, azurite, alerts(count, f"p{latency}"))
                    theirs = pysnc(emulator, alerts(count, f"s{latency}"))
                    for kind, (o, t) in zip(("new", "redelivered"), zip(ours, theirs, strict=True), strict=True):
                        ratios[(latency, kind)] = o[0] / t[0]
                        table.append(
                            f"| {latency} ms | {kind} | {o[0]:.1f} | {o[1]:.2f} | {t[0]:.1f} | {t[1]:.2f} | "
                            f"{o[0] / t[0]:.2f} |"
                        )
            finally:
                emulator.stop()
    finally:
        azurite.stop()
    cost = rule_cost()
    lines = [
        "# Forwarding benchmark",
        "",
        f"Produced by `.venv/bin/python -m bench.forwarding --alerts {args.alerts}`.",
        "",
        describe(),
        f"Sequential, one alert per invocation; {args.alerts} alerts at 0 ms, {max(20, args.alerts // 4)} at 50 ms "
        "added ServiceNow latency. The product also writes its ledger to Azurite (2 table calls for a new "
        "alert, 2 for a redelivery), which the ServiceNow call counts do not include.",
        "",
        *table,
        "",
        f"Rule evaluation with 100 rules: **{cost:.1f} µs per alert** (2000 alerts, mixed severities, engines, "
        "protocols found in the alert text, zones).",
        "",
        f"Reading: at 0 ms the emulator answers in well under a millisecond, so the product's two ledger calls "
        f"to Azurite (a few ms each on this machine) dominate and it runs at {ratios[(0, 'new')]:.2f}× PySNC's rate "
        f"for new alerts. With 50 ms added, still quicker than a real instance, ServiceNow round trips dominate: "
        f"one call per new alert instead of two gives {ratios[(50, 'new')]:.2f}×, and no call per redelivery "
        f"instead of one gives {ratios[(50, 'redelivered')]:.2f}×. PySNC's query-then-insert also duplicates "
        "when two copies of an alert race (each query misses the other's insert); the ledger's claim prevents "
        "that.",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
