"""Fault campaign: the whole product under every failure it is built to survive, then a count.

``python -m tools.campaign`` runs it (``--help`` for the knobs). Valid alerts and invalid messages
go through the local host (its own process), Azurite, the Key Vault emulator and the ServiceNow
emulator while the campaign injects, throughout, random 5xx answers, connection resets and
responses that arrive after the client's read timeout (the record was written: a lost response);
and, as the alerts get recorded, 429 bursts with Retry-After, a ServiceNow outage, a revocation of
every OAuth token followed by ``connect``, a Key Vault outage spanning a host restart, and SIGKILLs of
the host followed by restarts. Afterwards every valid alert must be in ServiceNow exactly once (lost
and duplicated both 0) and every invalid message in the poison queue with a reason.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.assets.index import IndexWriter
from shared.assets.model import Asset
from shared.defender.model import Device
from shared.http.errors import HttpError
from shared.platform.storage import create_table_if_missing, table_service
from shared.servicenow.oauth import TokenError
from tools.machine import describe as machine
from tools.stack.appstack import AppStack, alert_correlation_id, alert_document

SETTINGS = {
    # Short timeouts and retry delays so a campaign of minutes sees many rounds of each failure.
    "SERVICENOW_CONNECT_TIMEOUT_SECONDS": "2",
    "SERVICENOW_READ_TIMEOUT_SECONDS": "2",
    "SERVICENOW_RETRY_BUDGET_SECONDS": "5",
    "FORWARDING_RETRY_BASE_SECONDS": "1",
    "FORWARDING_RETRY_MAX_SECONDS": "10",
    "FORWARDING_CLAIM_SECONDS": "12",  # > 5 + 2 + 2: a crashed worker's claim is recovered after 12 s
}


def invalid_messages(count: int, run: str) -> list[bytes]:
    """Messages no sensor should send, one of each kind in turn; each must end up poisoned with a reason."""
    kinds: list[Callable[[int], bytes]] = [
        lambda i: b"{not json " + str(i).encode(),
        lambda i: json.dumps({"schema": "defender-iot-alert/v0", "kind": "alert", "n": i}).encode(),
        lambda i: json.dumps({**alert_document(i, run), "alert": {"id": i, "title": "no severity"}}).encode(),
        lambda i: json.dumps({**alert_document(i, run), "kind": "weather"}).encode(),
        lambda i: json.dumps([i]).encode(),
    ]
    return [kinds[i % len(kinds)](i) for i in range(count)]


@dataclass
class Plan:
    alerts: int = 10_000
    invalid: int = 100
    error_rate: float = 0.10  # 5xx per request
    reset_rate: float = 0.01  # connection reset, nothing served
    lost_response_rate: float = 0.01  # served, answered after the read timeout
    burst: int = 40  # 429s in a row, with Retry-After
    outage_seconds: float = 60.0  # the 10-minute outage, scaled; --outage-seconds 600 for the real one
    revoked_seconds: float = 10.0  # how long the connection stays revoked before an operator runs connect
    key_vault_outage_seconds: float = 20.0
    kills: int = 4
    receive_visibility: int = 10  # seconds before a killed host's messages are visible again
    seed: int = 2026
    timeout: float = 3600.0
    assets: bool = False  # the device sync on, each alert naming a device of the asset index: records name its CI


@dataclass
class Report:
    plan: Plan
    seconds: float = 0.0
    recorded: int = 0
    lost: int = 0
    duplicated: int = 0
    poisoned_invalid: int = 0
    poisoned_valid: int = 0
    invalid_missing: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    servicenow_requests: int = 0
    servicenow_faults: int = 0
    key_vault_faults: int = 0
    unlinked: int = 0  # with Plan.assets: valid alerts' records without their device's CI
    kills: int = 0
    deferrals: int = 0
    events: list[str] = field(default_factory=list)
    host_logs: str = ""

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and self.duplicated == 0
            and self.invalid_missing == 0
            and self.poisoned_valid == 0
            and self.poisoned_invalid == self.plan.invalid
        )


ASSET_SETTINGS = {"DEVICE_SYNC_ENABLED": "true", "DEVICE_SYNC_STATE_TABLE": "campaignassets"}
PLANT = 50  # the devices the alerts of a campaign with assets concern


def device(run: str, number: int) -> str:
    return f"{run}-device-{number % PLANT}"


def index_devices(stack: AppStack, run: str) -> dict[str, str]:
    """The asset index as the device sync leaves it, for the cloud source's devices the alerts name: name → CI."""
    table = table_service(stack.settings.alerts_storage).get_table_client(stack.settings.device_sync.state_table)
    create_table_if_missing(table)
    writer, cis = IndexWriter(table), {}
    for number in range(PLANT):
        name = device(run, number)
        cis[name] = stack.servicenow.store.insert("cmdb_ci_ot_control", {"name": name}, "campaign")["sys_id"]
        writer.put(Asset.of("cloud", Device(name, name, 0, "PLC"), cis[name], "cmdb_ci_ot_control"))
    writer.flush()
    return cis


def run_campaign(plan: Plan, workdir: Path, say: Callable[[str], None] = print) -> Report:
    report = Report(plan)
    rng = random.Random(plan.seed)  # a reproducible fault schedule, not security  # nosec B311
    run = f"c{plan.seed}"
    expected = {alert_correlation_id(i, run) for i in range(plan.alerts)}
    started = time.monotonic()

    def event(text: str) -> None:
        line = f"{time.monotonic() - started:7.1f}s  {text}"
        report.events.append(line)
        say(line)

    settings = {**SETTINGS, **ASSET_SETTINGS} if plan.assets else SETTINGS
    with AppStack(workdir, settings=settings, receive_visibility=plan.receive_visibility) as stack:
        servicenow, vault = stack.servicenow, stack.vault
        servicenow.faults.configure(
            {
                "seed": plan.seed,
                "fault_seconds": float(SETTINGS["SERVICENOW_READ_TIMEOUT_SECONDS"]) + 1,
                "error_rates": {
                    "500": plan.error_rate / 2,
                    "503": plan.error_rate / 2,
                    "reset": plan.reset_rate,
                    "slow_response": plan.lost_response_rate,
                },
            }
        )
        valid = [alert_document(i, run) for i in range(plan.alerts)]
        cis = index_devices(stack, run) if plan.assets else {}
        for number, document in enumerate(valid) if plan.assets else ():
            document["origin"] = {"source": "cloud", "ref": f"a{number}", "devices": {"related": [device(run, number)]}}
        messages: list[Any] = [*valid, *invalid_messages(plan.invalid, run)]
        rng.shuffle(messages)
        stack.start_host()
        event(f"host started; enqueueing {plan.alerts} valid alerts and {plan.invalid} invalid messages")
        stack.enqueue(messages, threads=8)
        event("all messages enqueued; random 5xx, resets and lost responses are on")

        def recorded() -> int:
            return len(expected.intersection(stack.correlations()))

        def kill_and_restart(note: str = "") -> None:
            stack.kill_host()
            report.kills += 1
            event(f"host killed with SIGKILL ({recorded()} recorded){note}")
            time.sleep(1)
            stack.start_host()
            event("host restarted")

        kill_points = [0.1 + 0.8 * k / max(plan.kills, 1) for k in range(plan.kills)]
        steps: list[tuple[float, str]] = [(p, "kill") for p in kill_points]
        steps += [(0.2, "burst"), (0.3, "outage"), (0.45, "revoke"), (0.6, "key vault")]
        steps.sort()
        deadline = time.monotonic() + plan.timeout
        for fraction, step in steps:
            while recorded() < fraction * plan.alerts:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"campaign stuck at {recorded()} of {plan.alerts} before {step}")
                time.sleep(0.5)
            if step == "kill":
                kill_and_restart()
            elif step == "burst":
                servicenow.faults.configure({"fail_next": [{"status": 429, "retry_after": "2", "count": plan.burst}]})
                event(f"{plan.burst} × 429 with Retry-After: 2")
            elif step == "outage":
                servicenow.faults.configure({"outage_seconds": plan.outage_seconds})
                event(f"ServiceNow outage: every request 503 for {plan.outage_seconds:.0f} s")
                time.sleep(plan.outage_seconds)
                event("ServiceNow back")
            elif step == "revoke":
                count = servicenow.oauth.revoke()
                event(f"every OAuth token revoked ({count}); alerts defer on 401 until someone runs connect")
                time.sleep(plan.revoked_seconds)
                # ServiceNow keeps failing at random meanwhile: like an operator, run connect again until it works.
                for attempt in range(1, 11):
                    try:
                        stack.connect()
                        break
                    except (TokenError, HttpError) as exc:
                        event(f"connect failed ({exc}); running it again")
                        if attempt == 10:
                            raise
                event("operator ran connect: new tokens in Key Vault")
            elif step == "key vault":
                vault.faults.configure({"outage_seconds": plan.key_vault_outage_seconds})
                kill_and_restart(
                    f"; Key Vault down for {plan.key_vault_outage_seconds:.0f} s, so the new host cannot read tokens"
                )
                time.sleep(plan.key_vault_outage_seconds)
                event("Key Vault back")
        while recorded() < plan.alerts:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        event(f"{recorded()} of {plan.alerts} recorded; random faults off, waiting for the queue to drain")
        servicenow.faults.clear()
        while stack.queue_depth() and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(plan.receive_visibility + 2)  # messages a kill left invisible come back and are settled
        while stack.queue_depth() and time.monotonic() < deadline:
            time.sleep(1)
        stack.stop_host()
        report.seconds = time.monotonic() - started
        counts = stack.correlations()
        report.recorded = len(expected.intersection(counts))
        report.lost = len(expected - set(counts))
        report.duplicated = sum(counts[c] - 1 for c in expected if counts[c] > 1)
        if plan.assets:
            records = [r for r in servicenow.store.all("incident") if r.get("correlation_id") in expected]
            report.unlinked = sum(r.get("cmdb_ci") not in cis.values() for r in records)
        invalid_bodies = {m for m in messages if isinstance(m, bytes)}
        poisoned = stack.drain_poison()
        found_invalid: set[bytes] = set()
        for wrapper in poisoned:
            body = _poisoned_body(wrapper)
            reason = str(wrapper.get("reason") or "")
            report.reasons[_reason_kind(reason)] = report.reasons.get(_reason_kind(reason), 0) + 1
            if body in invalid_bodies and reason:
                found_invalid.add(body)
            else:
                report.poisoned_valid += 1
        report.poisoned_invalid = len(found_invalid)
        report.invalid_missing = len(invalid_bodies - found_invalid)
        report.servicenow_requests = servicenow.stats["requests"]
        report.servicenow_faults = servicenow.stats["faults_injected"]
        report.key_vault_faults = vault.faults.injected
        report.host_logs = stack.host_logs()
        report.deferrals = report.host_logs.count(" deferred ")
    return report


def _poisoned_body(wrapper: dict[str, Any]) -> bytes:
    if "message_base64" in wrapper:
        return base64.b64decode(wrapper["message_base64"])
    return json.dumps(wrapper.get("message")).encode()


def _reason_kind(reason: str) -> str:
    return reason if len(reason) <= 90 else reason[:87] + "..."


def describe(report: Report) -> list[str]:
    plan = report.plan
    return [
        "| figure | value |",
        "|---|---|",
        f"| valid alerts | {plan.alerts:,} |",
        f"| invalid messages | {plan.invalid:,} |",
        f"| recorded in ServiceNow (distinct) | {report.recorded:,} |",
        f"| **lost** | **{report.lost}** |",
        f"| **duplicated** | **{report.duplicated}** |",
        f"| invalid messages in the poison queue with a reason | {report.poisoned_invalid} of {plan.invalid} |",
        f"| valid alerts in the poison queue | {report.poisoned_valid} |",
        f"| ServiceNow requests (per valid alert) | {report.servicenow_requests:,} "
        f"({report.servicenow_requests / max(plan.alerts, 1):.2f}) |",
        f"| ServiceNow faults injected | {report.servicenow_faults:,} |",
        f"| Key Vault faults injected | {report.key_vault_faults:,} |",
        f"| alerts deferred (log lines) | {report.deferrals:,} |",
        f"| host SIGKILLs | {report.kills} |",
        *([f"| records without their device's CI (the asset lookup on) | {report.unlinked} |"] if plan.assets else []),
        f"| wall time | {report.seconds:,.0f} s |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.campaign", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    defaults = Plan()
    parser.add_argument("--alerts", type=int, default=defaults.alerts)
    parser.add_argument("--invalid", type=int, default=defaults.invalid)
    parser.add_argument("--error-rate", type=float, default=defaults.error_rate, help="5xx per request")
    parser.add_argument("--outage-seconds", type=float, default=defaults.outage_seconds)
    parser.add_argument("--key-vault-outage-seconds", type=float, default=defaults.key_vault_outage_seconds)
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--assets", action="store_true", help="the device sync on: records name their devices' CIs")
    parser.add_argument("--output", type=Path, help="write the report (markdown) here")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    plan = Plan(
        alerts=args.alerts,
        invalid=args.invalid,
        error_rate=args.error_rate,
        outage_seconds=args.outage_seconds,
        key_vault_outage_seconds=args.key_vault_outage_seconds,
        kills=args.kills,
        seed=args.seed,
        assets=args.assets,
    )
    with tempfile.TemporaryDirectory() as scratch:
        report = run_campaign(plan, Path(scratch))
    lines = describe(report)
    print("\n".join(lines))
    if args.output:
        command = "python -m tools.campaign " + " ".join(argv if argv is not None else sys.argv[1:])
        args.output.write_text(
            "\n".join(
                [
                    "# Fault campaign",
                    "",
                    f"Produced by `{command.strip()}`.",
                    "",
                    machine(),
                    *lines,
                    "",
                    "Reasons in the poison queue:",
                    "",
                    *(f"- {kind}: {count}" for kind, count in sorted(report.reasons.items())),
                    "",
                    "Timeline:",
                    "",
                    "```",
                    *report.events,
                    "```",
                    "",
                ]
            )
        )
    print("PASSED: 0 lost, 0 duplicated" if report.passed else "FAILED", file=sys.stderr)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
