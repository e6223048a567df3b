"""The forwarder's per-alert overheads in the deployed configuration, before and after issue 17's changes, and
its throughput against a minimal consumer doing the same essential I/O.

- **before**: the product at the commit before the changes (``f57c14d^``: a HEAD of the rules blob per alert
  under a process-wide lock, storage sessions that consult the environment on every request, and an index
  write for every record), checked out in a git worktree;
- **after**: this checkout.

``--before REF`` measures another commit as the "before" (e.g. ``main`` against a branch: one run, both trees
checked out alike); ``--after REF`` measures a commit instead of the working tree, so that the checkout may
change while the benchmark runs.

Both run as deployed: rules in blob storage, OAuth tokens in the Key Vault emulator, one local host (own
process) holding 4 + 4 messages (main.bicep's derivation for alertsPerInstance 4). N alerts (default
1,000) wait on the queue; the host drains them at 0 ms ServiceNow latency. Measured:

- host CPU per alert: the host process's user + system time (``/proc/<pid>/stat``) from host ready to the
  last record, ÷ N;
- storage calls per alert: every request Azurite received from the host's start to the last record (its
  ``--debug`` log; a run of its own, since that log slows Azurite), ÷ N, by kind;
- throughput: N ÷ (last record − first record), in a run without the debug log.

The **minimal consumer**, in the after run's stack after the host has stopped: the same concurrency (8
threads) and batch size, and per alert only the essential I/O — queue receive (batches of 4) and delete,
a ledger insert and update, one HTTPS POST to the emulator. Throughput ratio = product ÷ minimal.

Run: `.venv/bin/python -m bench.overheads [--alerts 1000] [--before REF] [--after REF] [--output FILE]`;
writes bench/results/overheads.md by default.

``--assets`` (issue 25) measures the asset lookup instead, all in this checkout: **before**, the device sync
off (no lookup); **cold**, the sync on and every alert naming two devices no alert named before (each a point
read of the asset index, as a cloud alert's DeviceResourceIds are read); **warm**, the same with the alerts'
devices drawn from a plant of 50 (the process's cache answers most). The alerts carry their devices in
``origin.devices`` in every variant; the index rows are written before the host starts. Writes
bench/results/overheads-assets.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import queue
import re
import statistics
import subprocess  # git worktree for the "before" checkout  # nosec B404
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from azure.core import MatchConditions
from azure.storage.queue import QueueClient

from shared.assets.index import IndexWriter, device_row
from shared.assets.model import Asset
from shared.defender.model import Device
from shared.platform.storage import create_table_if_missing, table_service
from tools.machine import describe
from tools.stack.appstack import ROOT, AppStack, alert_document, encode

RESULTS = Path(__file__).parent / "results" / "overheads.md"
ASSETS_RESULTS = Path(__file__).parent / "results" / "overheads-assets.md"
BEFORE = "f57c14d^"
PER_INSTANCE = 4  # main.bicep: alertsPerInstance 4 → batchSize 4, newBatchThreshold 4
REQUEST = re.compile(r"info: (\w+)StorageContextMiddleware: RequestMethod=(\w+) RequestURL=(\S+)")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


INDEX_TABLE = "assetsync"  # the prefix of the device sync's state table in the --assets runs
PLANT = 50  # the devices of the warm variant


def request_kind(service: str, method: str, url: str) -> str:
    path = url.split("?", 1)[0]
    if service == "Table" and f"/{INDEX_TABLE}" in path:
        return "table read: asset index" if method == "GET" else "table other: asset index"
    if service == "Queue":
        if "/messages" in path:
            return {"GET": "queue receive", "DELETE": "queue delete", "POST": "queue send"}.get(method, "queue other")
        return "queue other"
    if service == "Table":
        return {"POST": "table insert", "GET": "table read/query"}.get(method, "table update")
    return "blob: the host's timer leases" if "azure-webjobs-hosts" in path else "blob: rules"


def count_requests(log: Path, since: float, until: float) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        match = REQUEST.search(line)
        if not match:
            continue
        moment = datetime.strptime(line[:24], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        if since <= moment <= until:
            counts[request_kind(*match.groups())] += 1
    return counts


def settings() -> dict[str, str]:
    return {
        "SERVICENOW_CONCURRENCY": "16",
        "AzureFunctionsJobHost__extensions__queues__batchSize": str(PER_INSTANCE),
        "AzureFunctionsJobHost__extensions__queues__newBatchThreshold": str(PER_INSTANCE),
    }


def device_name(run: str, number: int, variant: str | None) -> str:
    return f"dev-{run}-{number % (2 * PLANT) if variant == 'warm' else number}"


def asset_alert(number: int, run: str, variant: str | None) -> dict[str, Any]:
    """An alert between two devices of the cloud source, which names them as a cloud alert does."""
    document = alert_document(number, run)
    first, second = device_name(run, 2 * number, variant), device_name(run, 2 * number + 1, variant)
    document["alert"] |= {"sourceDeviceAddress": _address(first), "destinationDeviceAddress": _address(second)}
    document["origin"] = {"source": "cloud", "ref": f"alert-{number}", "devices": {"related": [first, second]}}
    return document


def _address(name: str) -> str:
    number = int(name.rsplit("-", 1)[1])
    return f"10.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}"


def index_devices(stack: AppStack, run: str, count: int, variant: str | None) -> None:
    """The asset index as the device sync leaves it: every device the alerts name, with a CI."""
    table = table_service(stack.settings.alerts_storage).get_table_client(stack.settings.device_sync.state_table)
    create_table_if_missing(table)
    writer = IndexWriter(table)
    for name in sorted({device_name(run, n, variant) for n in range(2 * count)}):
        device = Device(name, name, 0, "PLC", criticality="High", ips=(_address(name),))
        writer.put(Asset.of("cloud", device, uuid.uuid5(uuid.NAMESPACE_OID, name).hex, "cmdb_ci_ot_control"))
    writer.flush()


def drain(stack: AppStack, count: int, variant: str | None = None) -> dict[str, Any]:
    """Fill the queue, start one host, wait for every record; the host's CPU and the drain's times. ``variant``:
    the alerts name their devices (--assets), and the cold or warm variant's are in the asset index."""
    run = uuid.uuid4().hex[:8]
    if variant is not None:
        if variant != "before":
            index_devices(stack, run, count, variant)
        documents = [asset_alert(i, run, variant) for i in range(count)]
    else:
        documents = [alert_document(i, run) for i in range(count)]
    stack.enqueue(documents, threads=16)
    time.sleep(1)  # the enqueue's own requests stay out of the counted window
    started = time.time()
    stack.start_host()
    assert stack.host is not None
    storage_pid = stack.azurite.process.pid  # type: ignore[union-attr]
    ready, cpu_ready, storage_ready = time.time(), cpu_seconds(stack.host.pid), cpu_seconds(storage_pid)
    deadline = ready + 1800
    while time.time() < deadline:
        mine = [r for r in stack.servicenow.store.all("incident") if f"run {run}" in r.get("description", "")]
        if len(mine) >= count:
            break
        time.sleep(0.2)
    done, cpu_done, storage_done = time.time(), cpu_seconds(stack.host.pid), cpu_seconds(storage_pid)
    stack.stop_host()
    times = sorted(stack.servicenow.store.inserted_at[r["sys_id"]] for r in mine)
    return {
        "started": started,
        "ready": ready,
        "done": done,
        "cpu_ms": (cpu_done - cpu_ready) / count * 1000,
        "azurite_cpu_ms": (storage_done - storage_ready) / count * 1000,
        "alerts_per_second": (count - 1) / (times[-1] - times[0]),
        "records": len(mine),
    }


def minimal_consumer(stack: AppStack, count: int, variant: str | None = None) -> float:
    """Alerts per second of the essential I/O alone, at the host's concurrency and batch size. ``variant`` cold
    or warm: the asset index's point reads too, of two devices per alert, each read once (the cache's part)."""
    stack.enqueue([alert_document(i, "minimal") for i in range(count)], threads=16)
    table = table_service(stack.settings.alerts_storage).get_table_client(f"minimal{uuid.uuid4().hex[:8]}")
    table.create_table()
    index = None
    if variant in ("cold", "warm"):
        index_devices(stack, "minimal", count, variant)
        index = table_service(stack.settings.alerts_storage).get_table_client(stack.settings.device_sync.state_table)
    numbers, seen, lock = iter(range(count)), set[str](), threading.Lock()

    def look_up() -> None:
        with lock:
            number = next(numbers)
            names = {device_name("minimal", n, variant) for n in (2 * number, 2 * number + 1)} - seen
            seen.update(names)
        for name in sorted(names):
            assert index is not None
            index.get_entity(*device_row("cloud", name))

    stack.servicenow.oauth.users["minimal"] = "Minimal-Passw0rd"
    stack.servicenow.roles["minimal"] = {"itil"}
    session = requests.Session()
    session.trust_env = False
    session.verify = str(stack.servicenow.ca_pem)
    session.auth = ("minimal", "Minimal-Passw0rd")
    work: queue.Queue[Any] = queue.Queue()
    finished: list[float] = []
    held = threading.Condition()
    in_hand = [0]

    def fetch() -> None:
        """As the host does: another batch whenever no more than newBatchThreshold messages are in hand."""
        taken = 0
        while taken < count:
            with held:
                held.wait_for(lambda: in_hand[0] <= PER_INSTANCE)
            pages = stack.queue.receive_messages(messages_per_page=PER_INSTANCE, visibility_timeout=600).by_page()
            got: list[Any] = list(next(pages, []))
            with held:
                in_hand[0] += len(got)
            for message in got:
                work.put(message)
            taken += len(got)
        for _ in range(PER_INSTANCE * 2):
            work.put(None)

    def consume() -> None:
        while (message := work.get()) is not None:
            if index is not None:
                look_up()
            key = uuid.uuid4().hex
            entity = table.create_entity({"PartitionKey": key, "RowKey": "incident", "state": "claimed"})
            response = session.post(
                f"{stack.servicenow.url}/api/now/table/incident",
                json={"short_description": "minimal", "correlation_id": key},
                timeout=30,
            )
            response.raise_for_status()
            table.update_entity(
                {"PartitionKey": key, "RowKey": "incident", "state": "created"},
                etag=entity["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
            stack.queue.delete_message(message)
            with held:
                finished.append(time.time())
                in_hand[0] -= 1
                held.notify_all()

    threads = [threading.Thread(target=fetch)] + [threading.Thread(target=consume) for _ in range(PER_INSTANCE * 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finished.sort()
    return (len(finished) - 1) / (finished[-1] - finished[0])


def delete_cost(stack: AppStack, depth: int, samples: int = 64) -> float:
    """Azurite's median time to delete one received message from a queue holding ``depth`` messages (ms)."""
    client = QueueClient.from_connection_string(stack.azurite.connection_string, f"depth{uuid.uuid4().hex[:8]}")
    client.create_queue()
    body = encode(alert_document(0, "depth"))
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: client.send_message(body), range(depth)))
    times: list[float] = []
    while len(times) < samples:
        for message in client.receive_messages(max_messages=32, visibility_timeout=600):
            started = time.perf_counter()
            client.delete_message(message)
            times.append(time.perf_counter() - started)
    client.delete_queue()
    return statistics.median(times) * 1000


def checkout(scratch: Path, ref: str, name: str = "before") -> Path:
    tree = scratch / name
    subprocess.run(  # noqa: S603 - git on this repository  # nosec B603 B607
        ["git", "worktree", "add", "--detach", str(tree), ref],  # noqa: S607
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    # Its host reads host.json only (the override settings came later): give it the same queue settings.
    host_json = json.loads((tree / "host.json").read_text())
    host_json["extensions"]["queues"].update(batchSize=PER_INSTANCE, newBatchThreshold=PER_INSTANCE)
    (tree / "host.json").write_text(json.dumps(host_json, indent=2))
    return tree


def asset_settings(variant: str | None) -> dict[str, str]:
    if variant is None:
        return settings()
    sync = {"DEVICE_SYNC_ENABLED": "true" if variant != "before" else "false"}
    return {**settings(), **sync, "DEVICE_SYNC_STATE_TABLE": f"{INDEX_TABLE}{uuid.uuid4().hex[:8]}"}


def measure(
    app_dir: Path, scratch: Path, name: str, count: int, minimal: bool, variant: str | None = None
) -> dict[str, Any]:
    with AppStack(scratch / f"{name}-speed", settings=asset_settings(variant), app_dir=app_dir) as stack:
        speed = drain(stack, count, variant)
        speed["servicenow_requests"] = stack.servicenow.stats["requests"]
        if minimal:
            speed["minimal_per_second"] = minimal_consumer(stack, count, variant)
            speed["delete_ms"] = {depth: delete_cost(stack, depth) for depth in (100, 10_000)}
    log = scratch / f"{name}-azurite-debug.log"
    with AppStack(
        scratch / f"{name}-count", settings=asset_settings(variant), app_dir=app_dir, storage_debug_log=log
    ) as stack:
        counted = drain(stack, count, variant)
        calls = count_requests(log, counted["started"], counted["done"])
    own = sum(n for kind, n in calls.items() if kind.startswith(("table", "blob: rules")))
    return {**speed, "calls": calls, "calls_per_alert": sum(calls.values()) / count, "own_per_alert": own / count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--before", default=BEFORE, help=f"the commit measured as before (default {BEFORE})")
    parser.add_argument("--after", default=None, help="a commit measured as after (default: this checkout)")
    parser.add_argument("--assets", action="store_true", help="the asset lookup: no lookup, cold, warm")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    if args.assets:
        assets_report(args.alerts, args.output if args.output != RESULTS else ASSETS_RESULTS)
        return
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        trees = [checkout(scratch, args.before)]
        try:
            after_tree = ROOT if args.after is None else checkout(scratch, args.after, "after")
            trees.append(after_tree)
            before = measure(trees[0], scratch, "before", args.alerts, minimal=False)
            after = measure(after_tree, scratch, "after", args.alerts, minimal=True)
        finally:
            for tree in trees:
                if tree == ROOT:
                    continue
                subprocess.run(  # noqa: S603 - git on this repository  # nosec B603 B607
                    ["git", "worktree", "remove", "--force", str(tree)],  # noqa: S607
                    cwd=ROOT,
                    check=False,
                    capture_output=True,
                )
    kinds = sorted(set(before["calls"]) | set(after["calls"]))
    rows = [
        f"| host CPU per alert | {before['cpu_ms']:.2f} ms | {after['cpu_ms']:.2f} ms |",
        f"| Azurite CPU per alert | {before['azurite_cpu_ms']:.2f} ms | {after['azurite_cpu_ms']:.2f} ms |",
        f"| storage calls per alert, in all | {before['calls_per_alert']:.2f} | {after['calls_per_alert']:.2f} |",
        f"| — the product's own (ledger, rules) | {before['own_per_alert']:.2f} | {after['own_per_alert']:.2f} |",
        *(
            f"| — {kind} | {before['calls'][kind] / args.alerts:.3f} | {after['calls'][kind] / args.alerts:.3f} |"
            for kind in kinds
        ),
        f"| throughput | {before['alerts_per_second']:.1f} alerts/s | {after['alerts_per_second']:.1f} alerts/s |",
    ]
    ratio = after["alerts_per_second"] / after["minimal_per_second"]
    options = [f"--alerts {args.alerts}"] if args.alerts != 1000 else []
    options += [f"--before {args.before}"] if args.before != BEFORE else []
    options += [f"--after {args.after}"] if args.after else []
    options += [f"--output {args.output}"] if args.output != RESULTS else []
    command = "`" + " ".join([".venv/bin/python -m bench.overheads", *options]) + "`"
    after_name = f"commit `{args.after}`" if args.after else "this checkout"
    text = "\n".join(
        [
            "# Per-alert overheads, before and after",
            "",
            f"Produced by {command}.",
            "",
            describe(),
            f"{args.alerts:,} alerts wait on the queue; one local host (own process) drains them at 0 ms ServiceNow "
            f"latency, holding {PER_INSTANCE} + {PER_INSTANCE} messages, rules in blob storage, OAuth tokens in the "
            f"Key Vault emulator. Before: commit `{args.before}` in a git worktree, same queue settings; after: "
            f"{after_name}.",
            "",
            "| per alert | before | after |",
            "|---|---|---|",
            *rows,
            "",
            f"Minimal consumer (queue receive in batches of {PER_INSTANCE} and delete, a ledger insert and update, one "
            f"HTTPS POST; {PER_INSTANCE * 2} threads) in the after run's stack: "
            f"{after['minimal_per_second']:.1f} alerts/s. The product reaches **{ratio:.2f}** of it. The minimal "
            "consumer runs in the benchmark's process, beside the emulators; the host has a process of its own.",
            "",
            f"Azurite's median time to delete one message: {after['delete_ms'][100]:.1f} ms from a queue holding 100, "
            f"{after['delete_ms'][10_000]:.1f} ms from one holding 10,000.",
            "",
            "Host CPU: the host process's user + system time from ready to the last record, ÷ alerts. Storage calls: "
            "every request Azurite logged from the host's start to the last record (its debug log, in a run of its "
            "own), ÷ alerts; it includes the host's start-up, its queue polling and its timers' leases. The product's "
            "own calls are the ledger's (table) and the rules' (blob); the queue's receive and delete are the host's, "
            "which every queue consumer makes. "
            "Throughput: alerts ÷ (last record − first record), in "
            "the run without the debug log.",
            "",
        ]
    )
    args.output.write_text(text)
    print(text)


def _per_alert(result: dict[str, Any], kind: str, count: int) -> str:
    return f"{result['calls'].get(kind, 0) / count:.3f}"


def assets_report(count: int, output: Path) -> None:
    """The --assets runs, one after another in this process: no lookup, cold, warm."""
    with tempfile.TemporaryDirectory() as folder:
        found = {v: measure(ROOT, Path(folder), v, count, minimal=True, variant=v) for v in ("before", "cold", "warm")}
    variants = list(found)
    kinds = sorted(set().union(*(found[v]["calls"] for v in variants)))

    def row(label: str, value: Callable[[dict[str, Any]], str]) -> str:
        return f"| {label} | " + " | ".join(value(found[v]) for v in variants) + " |"

    def ratio_of(r: dict[str, Any]) -> str:
        return f"**{r['alerts_per_second'] / r['minimal_per_second']:.2f}**"

    rows = [
        row("host CPU per alert", lambda r: f"{r['cpu_ms']:.2f} ms"),
        row("storage calls per alert, in all", lambda r: f"{r['calls_per_alert']:.2f}"),
        *(row(f"— {kind}", functools.partial(_per_alert, kind=kind, count=count)) for kind in kinds),
        row("ServiceNow requests per alert", lambda r: f"{r['servicenow_requests'] / count:.3f}"),
        row("throughput", lambda r: f"{r['alerts_per_second']:.1f} alerts/s"),
        row("minimal consumer", lambda r: f"{r['minimal_per_second']:.1f} alerts/s"),
        row("**throughput ÷ minimal consumer**", ratio_of),
    ]
    ratio = found["cold"]["alerts_per_second"] / found["cold"]["minimal_per_second"]
    before = found["before"]["alerts_per_second"] / found["before"]["minimal_per_second"]
    warm = found["warm"]["alerts_per_second"] / found["warm"]["minimal_per_second"]
    options = [f"--alerts {count}"] if count != 1000 else []
    options += [f"--output {output}"] if output != ASSETS_RESULTS else []
    command = "`" + " ".join([".venv/bin/python -m bench.overheads --assets", *options]) + "`"
    text = "\n".join(
        [
            "# The asset lookup's overheads (issue 25)",
            "",
            f"Produced by {command}.",
            "",
            describe(),
            f"{count:,} alerts wait on the queue; one local host (own process) drains them at 0 ms ServiceNow latency, "
            f"holding {PER_INSTANCE} + {PER_INSTANCE} messages, rules in blob storage, OAuth tokens in the Key Vault "
            "emulator (as deployed). Every alert names two devices of the cloud source (origin.devices.related, and "
            "their addresses). **before**: DEVICE_SYNC_ENABLED false, so no lookup; **cold**: the sync on, each "
            "alert's two devices in the index and named by no alert before; **warm**: the alerts' devices drawn "
            f"from a plant of {PLANT * 2} in the index (the process's cache, 300 s, answers after their first read).",
            "",
            "| per alert | " + " | ".join(variants) + " |",
            "|---|" + "---|" * len(variants),
            *rows,
            "",
            f"Throughput ÷ the minimal consumer (the essential I/O: queue receive and delete, a ledger insert and "
            "update, one HTTPS POST; in the cold and warm variants also the asset index's point reads, each "
            f"device's once, as the product's cache reads them) is {before:.2f} without the lookup and "
            f"{ratio:.2f} with it, cold ({ratio / before:.2f} of before); warm {warm:.2f} ({warm / before:.2f} of "
            "before). Each variant's minimal consumer runs in its own stack after its host.",
            "",
            "Storage calls: every request Azurite logged from the host's start to the last record (its debug log, in "
            "a run of its own), ÷ alerts; the asset index's are the reads of the device sync's state table.",
            "",
        ]
    )
    output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
