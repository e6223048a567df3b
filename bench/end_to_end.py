"""End to end: alerts through the local host (its own process), Azurite and the ServiceNow emulator.

For each added ServiceNow latency (0 ms and 50 ms), two runs of N alerts (default 10,000):

- **backlog**: the queue is filled first, then the host starts; alerts per second = N ÷ (last record
  − first record). This is the product's throughput.
- **paced**: alerts are enqueued at about half that rate while the host runs; enqueue-to-record
  latency (median and 99th percentile) is measured per alert, from the moment its message was sent to
  the moment the emulator stored its incident.

ServiceNow calls per alert come from the emulator's request counter. The bound: a host runs at most
batchSize + newBatchThreshold messages at once (host.json), and each new alert costs one ServiceNow
call, so with latency L no host can exceed (batchSize + newBatchThreshold) ÷ L alerts per second.
The ratio says how close the product gets.

Run: `.venv/bin/python -m bench.end_to_end [--alerts 10000] [--latencies 0 50]`; writes
bench/results/end_to_end.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from tools.funchost.config import QueueOptions, load_host_json
from tools.machine import describe
from tools.stack.appstack import ROOT, AppStack, alert_correlation_id, alert_document, encode

RESULTS = Path(__file__).parent / "results" / "end_to_end.md"


def expected_ids(run: str, count: int) -> dict[str, int]:
    return {alert_correlation_id(i, run): i for i in range(count)}


def wait_for_records(stack: AppStack, expected: dict[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sum(1 for r in stack.servicenow.store.all("incident") if r.get("correlation_id") in expected)
        if found >= len(expected):
            return
        time.sleep(0.5)
    raise RuntimeError(f"only {found} of {len(expected)} records after {timeout:.0f} s")


def insert_times(stack: AppStack, expected: dict[str, int]) -> dict[int, float]:
    return {
        expected[r["correlation_id"]]: stack.servicenow.store.inserted_at[r["sys_id"]]
        for r in stack.servicenow.store.all("incident")
        if r.get("correlation_id") in expected
    }


def backlog_run(workdir: Path, latency: int, count: int) -> dict[str, Any]:
    with AppStack(workdir, latency_ms=latency) as stack:
        run = uuid.uuid4().hex[:8]
        expected = expected_ids(run, count)
        stack.enqueue([alert_document(i, run) for i in range(count)], threads=16)
        calls_before = stack.servicenow.stats["requests"]
        stack.start_host()
        wait_for_records(stack, expected, timeout=120 + count * (0.2 + latency / 1000))
        times = sorted(insert_times(stack, expected).values())
        duplicates = sum(n - 1 for n in stack.correlations().values() if n > 1)
        time.sleep(2)  # let the last messages settle before counting calls
        calls = stack.servicenow.stats["requests"] - calls_before
        stack.stop_host()
        return {
            "alerts_per_second": (count - 1) / (times[-1] - times[0]),
            "calls_per_alert": calls / count,
            "duplicates": duplicates,
        }


def paced_run(workdir: Path, latency: int, count: int, rate: float) -> dict[str, Any]:
    with AppStack(workdir, latency_ms=latency) as stack:
        stack.start_host()
        run = uuid.uuid4().hex[:8]
        expected = expected_ids(run, count)
        calls_before = stack.servicenow.stats["requests"]
        sent: dict[int, float] = {}
        started = time.monotonic()
        for i in range(count):
            # Paced: the i-th alert goes out at i/rate seconds (sends are quick; sleep the remainder).
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stack.queue.send_message(encode(alert_document(i, run)))
            sent[i] = time.time()
        wait_for_records(stack, expected, timeout=120 + count * (0.2 + latency / 1000))
        inserted = insert_times(stack, expected)
        latencies = sorted(inserted[i] - sent[i] for i in range(count))
        time.sleep(2)
        calls = stack.servicenow.stats["requests"] - calls_before
        stack.stop_host()
        return {
            "offered_per_second": count / (max(sent.values()) - min(sent.values())),
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
            "calls_per_alert": calls / count,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--latencies", type=int, nargs="*", default=[0, 50])
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    queues = QueueOptions.from_host_json(load_host_json(ROOT / "host.json"), os.cpu_count() or 1)
    concurrency = queues.batch_size + queues.new_batch_threshold
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for latency in args.latencies:
            backlog = backlog_run(Path(scratch) / f"backlog{latency}", latency, args.alerts)
            paced = paced_run(Path(scratch) / f"paced{latency}", latency, args.alerts, backlog["alerts_per_second"] / 2)
            if latency:
                bound = concurrency / (latency / 1000)
                bound_text = f"{bound:,.0f}/s"
                ratio = f"{backlog['alerts_per_second'] / bound:.2f}"
            else:
                bound_text, ratio = "none (CPU)", "–"
            rows.append(
                f"| {latency} ms | {backlog['alerts_per_second']:,.1f} | {backlog['calls_per_alert']:.3f} "
                f"| {backlog['duplicates']} | {paced['offered_per_second']:,.1f} | {paced['p50_ms']:,.0f} "
                f"| {paced['p99_ms']:,.0f} | {paced['calls_per_alert']:.3f} | {bound_text} | {ratio} |"
            )
            print(rows[-1], flush=True)
    command = "`.venv/bin/python -m bench.end_to_end" + (
        "`" if args.alerts == 10_000 and args.latencies == [0, 50] else f" --alerts {args.alerts}`"
    )
    text = "\n".join(
        [
            "# End-to-end benchmark",
            "",
            f"Produced by {command}.",
            "",
            describe(),
            f"{args.alerts:,} alerts per run through `function_app.py` in the local host (own process), Azurite "
            "(in memory), the Key Vault emulator (OAuth tokens) and the ServiceNow emulator, all on this machine. "
            f"Host concurrency: batchSize {queues.batch_size} + newBatchThreshold {queues.new_batch_threshold} "
            f"= {concurrency} messages at once (host.json).",
            "",
            "| ServiceNow latency | backlog alerts/s | ServiceNow calls per alert | duplicates | paced offered/s "
            "| paced p50 ms | paced p99 ms | calls per alert (paced) | bound (concurrency ÷ latency) "
            "| throughput ÷ bound |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Backlog: the queue holds all alerts before the host starts; throughput is alerts ÷ (last record − first "
            "record). Paced: alerts are sent at about half the backlog throughput while the host runs; latency is from "
            "each message's send to its incident's insert in the emulator. Each new alert costs one ServiceNow call "
            "(the claim ledger lives in Azure Table storage), so calls per alert above 1.000 are OAuth or retries.",
            "",
        ]
    )
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
