"""The device sync at a real instance's latencies, with alerts forwarded beside it.

The assumption (the emulator's IRE cost model, :mod:`tools.emulators.servicenow.ire_cost`): an IRE payload
costs 1 s, plus 5 ms per item the rules must match (a CI the source key does not find: every CI of a first
sync) and 1 ms per item its source native key finds — 2 s for a first sync's payload of 100 devices (about
204 items: the devices, their addresses, the sensors named), 1.2 s for 100 connections; every request
waits 50 ms more; the instance has 16 API transactions, and a request beyond them is refused (429). The sync
runs as the app runs it: through the connection's budget (concurrency 16, shared through the budget board
with every instance) at the sync's low priority, ``DEVICE_SYNC_CONCURRENCY`` 12.

Alerts: another process, as a forwarder instance, creates an incident (priority 3, the budget's severity
High) every 250 ms through its own budget on the same board, before, during and after the sync; their
latency p99 with and without the sync running comes from that one run. The ServiceNow emulator runs in a
process of its own (an instance is a machine of its own), its heap frozen every second (``BENCH_FREEZE_GC=0``
leaves its collector alone), the console emulator in this one. Each alert's time splits into the instance's own
(the emulator's ``Server-Timing``) and the rest, and both processes' full garbage collections are counted.
The sync's process, Azurite and the console stand for other machines (in Azure the sync's function scales on
instances of its own): they run at a lower CPU priority (``BENCH_NICE``, 10) than the alerts' process and the
instance, so the two cores this machine has do not make the alerts wait for a CPU they would have to themselves.

Run: `.venv/bin/python -m bench.device_sync_realistic [--sizes 10000 100000]`; writes
bench/results/device_sync_realistic.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess  # runs this interpreter on this module only  # nosec B404
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.device_sync import PASSWORD, TOKEN, USER, child_spec, sync_child
from tools.machine import describe, lower_priority

RESULTS = Path(__file__).parent / "results" / "device_sync_realistic.md"
COST = {"payload_ms": 1000.0, "rule_item_ms": 5.0, "native_item_ms": 1.0}
LATENCY_MS = 50
TRANSACTIONS = 16
ALERT_EVERY = 0.25
QUIET_SECONDS = 30.0  # alerts alone, before and after the sync
# The emulator's interpreter switches threads every 0.5 ms, not 5: its IRE is Python on one interpreter lock, and
# a thread preempted while it holds the store's lock holds up the alerts' inserts (holds of 0.5-0.8 s measured).
SWITCH_INTERVAL = 0.0005
# Its heap frozen every second: a full collection of a 100,000-device store stopped every thread, the alerts'
# included, for most of a second (alerts that waited outside the instance's own time, in bursts).
FREEZE_GC = float(os.environ.get("BENCH_FREEZE_GC", "1"))
# In Azure the sync runs on an instance of its own (Flex Consumption scales each queue or timer function on its
# own instances), and storage and the console are other machines; here they share two cores with the alerts'
# process and the ServiceNow instance, so they run at this niceness: they get the CPU those two leave, as on
# machines of their own they would not take theirs. ``BENCH_NICE=0`` runs them all alike.
NICE = int(os.environ.get("BENCH_NICE", "10"))


def alerts_child(spec: dict[str, Any]) -> None:
    """Create incidents at a steady pace until stdin closes; print each one's (start, seconds, ok)."""
    import logging

    from azure.data.tables import TableServiceClient
    from requests.adapters import HTTPAdapter

    from shared.app import servicenow_client
    from shared.http.settings import HttpSettings
    from shared.platform.budget_board import TableBudgetBoard
    from shared.platform.secrets import EnvironmentSecretStore
    from shared.servicenow.budget import PRIORITY, Budget
    from shared.servicenow.settings import ServiceNowConnection

    logging.disable(logging.WARNING)
    http = HttpSettings(connect_timeout=5, read_timeout=60, retry_budget_seconds=60, max_attempts=5)
    tables = TableServiceClient.from_connection_string(spec["storage"])
    budget = Budget("bench", TRANSACTIONS, board=TableBudgetBoard(tables.get_table_client(spec["board_table"])))
    connection = ServiceNowConnection("bench", spec["servicenow"], "basic", username=USER, ca_bundle=Path(spec["ca"]))
    secrets = EnvironmentSecretStore({"SERVICENOW_BENCH_PASSWORD": PASSWORD})
    client = servicenow_client(connection, secrets, http, budget).with_context(**{PRIORITY: 3})
    samples: list[tuple[float, float, bool, float, float]] = []
    lock = threading.Lock()
    stop = threading.Event()
    waited = threading.local()  # the time this thread's request waited for a budget slot
    acquire = budget.acquire

    def timed_acquire(level: int) -> None:
        started = time.perf_counter()
        try:
            acquire(level)
        finally:
            waited.seconds = getattr(waited, "seconds", 0.0) + time.perf_counter() - started

    budget.acquire = timed_acquire  # type: ignore[method-assign]
    send = HTTPAdapter.send

    def timed_send(adapter: HTTPAdapter, request: Any, **kwargs: Any) -> Any:
        # The instance's own time for each answer (the emulator's Server-Timing): the rest is the client's and
        # the wire's, so a slower alert shows which side of the wire it waited on.
        response = send(adapter, request, **kwargs)
        timing = response.headers.get("Server-Timing", "")
        if "dur=" in timing:
            waited.instance = getattr(waited, "instance", 0.0) + float(timing.rsplit("dur=", 1)[1]) / 1000
        return response

    HTTPAdapter.send = timed_send  # type: ignore[method-assign,assignment]

    def one(number: int) -> None:
        started = time.time()
        waited.seconds = waited.instance = 0.0
        ok = True
        try:
            client.create_record("incident", {"short_description": f"bench alert {number}"})
        except Exception:  # a refused or failed alert counts as not forwarded
            ok = False
        with lock:
            samples.append((started, time.time() - started, ok, waited.seconds, waited.instance))

    def pace() -> None:
        number = 0
        while not stop.is_set():
            threading.Thread(target=one, args=(number,), daemon=True).start()
            number += 1
            stop.wait(ALERT_EVERY)

    pacer = threading.Thread(target=pace, daemon=True)
    pacer.start()
    sys.stdin.read()  # until the bench closes it
    stop.set()
    time.sleep(2)
    with lock:
        print(json.dumps({"samples": samples}))


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[98]


class ServiceNowProcess:
    """The ServiceNow emulator in a process of its own, as an instance is a machine of its own: the alerts'
    requests must not queue for an interpreter lock that the console emulator or the bench holds."""

    def __init__(self, tls: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "tools.emulators.servicenow",
            "--port=0",
            f"--tls-dir={tls}",
            f"--user={USER}:{PASSWORD}",
            f"--latency-ms={LATENCY_MS}",
            f"--max-transactions={TRANSACTIONS}",
            f"--ire-payload-ms={COST['payload_ms']}",
            f"--ire-rule-item-ms={COST['rule_item_ms']}",
            f"--ire-native-item-ms={COST['native_item_ms']}",
            f"--switch-interval={SWITCH_INTERVAL}",
            *([f"--freeze-gc={FREEZE_GC}"] if FREEZE_GC else []),
        ]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: S603  # nosec B603
        assert self.process.stdout is not None
        banner = self.process.stdout.readline()  # "ServiceNow emulator listening on https://…"
        if "listening on" not in banner:
            raise RuntimeError(f"the ServiceNow emulator did not start: {banner!r}")
        self.url = banner.rsplit(" ", 1)[-1].strip()
        self.ca = tls / "ca.pem"

    @property
    def stats(self) -> dict[str, int]:
        import requests

        answer = requests.get(f"{self.url}/_emulator/stats", verify=str(self.ca), timeout=30)
        answer.raise_for_status()
        return dict(answer.json())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run_size(size: int, tls: Path, storage: str) -> list[str]:
    from tools.emulators.console import ConsoleEmulator, generate

    console = ConsoleEmulator(generate(size, seed=3), token=TOKEN, tls_dir=tls).start()
    servicenow = ServiceNowProcess(tls)
    try:
        spec = child_spec(console, servicenow, storage)
        spec |= {"board_table": f"board{uuid.uuid4().hex[:10]}", "instance_concurrency": TRANSACTIONS, "nice": NICE}
        alerts = subprocess.Popen(  # noqa: S603 - this interpreter, this module  # nosec B603
            [sys.executable, "-m", "bench.device_sync_realistic", "--alerts", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if NICE:  # the console's thread, and the ones it starts for its connections (this process's others not)
            served_by = {t.name: t.native_id for t in threading.enumerate()}[console.thread_name]
            assert served_by is not None  # started, so Linux has given it a thread id
            os.setpriority(os.PRIO_PROCESS, served_by, NICE)
        time.sleep(QUIET_SECONDS)
        before = servicenow.stats
        first = sync_child(spec)
        after = servicenow.stats
        time.sleep(QUIET_SECONDS)
        out, _ = alerts.communicate("", timeout=120)
        samples = json.loads(out.strip().splitlines()[-1])["samples"]
        if os.environ.get("BENCH_SAMPLES"):  # for a closer look: every alert, and the sync's span
            Path(os.environ["BENCH_SAMPLES"]).write_text(json.dumps({"samples": samples, "sync": first}))
        during = [s for s in samples if first["started"] <= s[0] <= first["started"] + first["seconds"]]
        quiet = [s for s in samples if s not in during]
        again = sync_child(spec)
    finally:
        console.stop()
        servicenow.stop()
    busy_s = (after.get("transaction_ms", 0) - before.get("transaction_ms", 0)) / 1000
    rejected = after.get("semaphore_rejected", 0) - before.get("semaphore_rejected", 0)
    return [
        f"| {size:,} | first sync | {first['seconds']:.1f} | {first['servicenow_calls']:,} | "
        f"{first['servicenow_calls'] / size:.3f} | {first['storage_calls'] / size:.4f} | {first['peak_mb']:.0f} |",
        f"| {size:,} | no-change re-sync | {again['seconds']:.1f} | {again['servicenow_calls']:,} | "
        f"{again['servicenow_calls'] / size:.3f} | {again['storage_calls'] / size:.4f} | {again['peak_mb']:.0f} |",
        "",
        f"Instance transaction time the first sync and the alerts used: {busy_s:,.0f} s (what one request at a "
        f"time would wait, at least; {busy_s / first['seconds']:.1f} transactions busy on average); "
        f"{rejected:,} request(s) refused by the full instance (429). The emulator's full garbage collections: "
        f"{after.get('gc_full_collections', 0) - before.get('gc_full_collections', 0)}, "
        f"{after.get('gc_full_pause_ms', 0) - before.get('gc_full_pause_ms', 0):,} ms in all, the longest "
        f"{after.get('gc_full_pause_max_ms', 0):,} ms; the sync process's: {first.get('gc_full_collections', 0)}, "
        f"{first.get('gc_full_pause_ms', 0):,} ms in all, the longest {first.get('gc_full_pause_max_ms', 0):,} ms.",
        "",
        "| alerts | count | not forwarded | p50 ms | p99 ms | budget wait p99 / max ms | instance's time p50 / p99 ms "
        "| outside the instance p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {label} | {len(group)} | {sum(1 for s in group if not s[2])} | "
            f"{statistics.median([s[1] for s in group]) * 1000:.0f} | {p99([s[1] for s in group]) * 1000:.0f} | "
            f"{p99([s[3] for s in group]) * 1000:.1f} / {max(s[3] for s in group) * 1000:.1f} | "
            f"{statistics.median([s[4] for s in group]) * 1000:.0f} / {p99([s[4] for s in group]) * 1000:.0f} | "
            f"{statistics.median([s[1] - s[4] for s in group]) * 1000:.0f} / "
            f"{p99([s[1] - s[4] for s in group]) * 1000:.0f} |"
            for label, group in (("without the sync (before and after it)", quiet), ("while the sync runs", during))
            if group
        ),
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--alerts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.alerts:
        alerts_child(json.loads(args.alerts))
        return
    import logging

    from tools.stack.azurite import start_azurite

    logging.disable(logging.WARNING)
    overrides = [f"{name}={os.environ[name]}" for name in ("BENCH_FREEZE_GC", "BENCH_NICE") if name in os.environ]
    command = " ".join([*overrides, ".venv/bin/python -m bench.device_sync_realistic", *sys.argv[1:]])
    lines = [
        "# Device sync at a real instance's latencies",
        "",
        f"Produced by `{command.strip()}`.",
        "",
        describe(),
        f"Assumption: an IRE payload costs {COST['payload_ms']:.0f} ms, plus {COST['rule_item_ms']:.0f} ms per item "
        f"matched by rules and {COST['native_item_ms']:.0f} ms per item found by its source native key (2 s for "
        "a first sync's payload of 100 devices, about 204 items; 1.2 s for 100 connections); every request "
        f"{LATENCY_MS} ms more; {TRANSACTIONS} API transactions, the rest refused (429). The sync: the app's "
        "budget (16, shared on the board with the alerts' instance: 8 each), DEVICE_SYNC_CONCURRENCY 12, IRE "
        "batches of 100 devices or connections, console pages of 500. Alerts: an incident every 250 ms from "
        "another process (priority High) through its own budget on the same board. Inventories from the console "
        "emulator (4 sensors, 0-2 connections per device, 10% with CVEs); state in Azurite. The ServiceNow emulator "
        f"runs in a process of its own (thread switch interval {SWITCH_INTERVAL * 1000:g} ms"
        f"{f'; its heap frozen every {FREEZE_GC:g} s' if FREEZE_GC else ''}). "
        + (
            f"The sync's process, Azurite and the console run at niceness {NICE}: in Azure each is a machine of "
            "its own (the sync's function scales on its own instances), here they share two cores with the "
            "alerts' process and the instance."
            if NICE
            else "Every process at the same CPU priority."
        ),
        "",
        "| devices | run | wall s | ServiceNow calls | per device | storage calls per device | peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    azurite = start_azurite()
    if NICE and azurite.process is not None:
        lower_priority(azurite.process.pid, NICE)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            table_end = len(lines)  # the sizes' rows go in one table, each size's notes after it
            for size in args.sizes:
                figures = run_size(size, Path(scratch) / "tls", azurite.connection_string)
                lines[table_end:table_end] = figures[:2]
                table_end += 2
                lines += ["", f"At {size:,} devices:", "", *figures[3:]]
                args.output.write_text("\n".join(lines) + "\n")
    finally:
        azurite.stop()
    print(args.output.read_text())


if __name__ == "__main__":
    main()
