"""What a telemetry flush per invocation would cost, against the flush the app does today (on SIGTERM only).

One process, the app's own telemetry set-up: ``configure_azure_monitor`` as ``shared.platform.telemetry`` calls
it (metrics, logs and traces; the distro's 60-s metric export), exporting over real HTTP to a local stand-in for
the Application Insights ingestion endpoint (``/v2.1/track``) that answers after a fixed latency. Each invocation
is the real ``Forwarder.handle`` of a new alert: its ledger in Azurite, one record created in the ServiceNow
emulator (at a stated latency), the forwarder's counters, histogram and log lines. Per ingestion latency, the same
number of invocations run with no flush (today), with the meter provider's ``force_flush`` after each, and with
``telemetry.flush()`` after each (the meter, tracer and logger providers' ``force_flush``, what the SIGTERM
handler calls), in blocks whose order alternates so that drift hits every mode alike.

Measured per invocation: wall time (median, p95), the process's CPU time (every thread: the exporters'
serialisation included), and the requests and bytes the ingestion stand-in received.

Run: `.venv/bin/python -m bench.telemetry_flush [--alerts 60]`; writes bench/results/telemetry_flush.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.forwarding import PASSWORD, RULES, USER, alerts, product_environ
from tools.emulators.servicenow import ServiceNowEmulator
from tools.machine import describe
from tools.stack.azurite import start_azurite

RESULTS = Path(__file__).parent / "results" / "telemetry_flush.md"
INGESTION_LATENCIES_MS = (30, 80)  # Application Insights ingestion from inside Azure: tens of ms per request
SERVICENOW_LATENCY_MS = 50
BLOCKS = 4  # alternating blocks per mode and latency


class Ingestion(ThreadingHTTPServer):
    """The stand-in: accepts every envelope after ``latency`` seconds, as Breeze answers (itemsReceived/Accepted)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Track)
        self.latency = 0.0
        self.requests = 0
        self.bytes = 0
        self.items = 0
        self.live_metrics = 0  # the distro's live-metrics pings (on by default), which a flush does not send
        self.lock = threading.Lock()

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            return self.requests, self.bytes, self.items


class _Track(BaseHTTPRequestHandler):
    server: Ingestion

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if "QuickPulseService" in self.path:  # answered at once, not subscribed: the distro pings every 5 s
            with self.server.lock:
                self.server.live_metrics += 1
            self._answer(b"")
            return
        try:
            items = len(json.loads(body))
        except ValueError:
            items = 0
        time.sleep(self.server.latency)
        with self.server.lock:
            self.server.requests += 1
            self.server.bytes += len(body)
            self.server.items += items
        self._answer(json.dumps({"itemsReceived": items, "itemsAccepted": items, "errors": []}).encode())

    def _answer(self, answer: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        pass


def run_block(forwarder: Any, flush: Any, bodies: list[bytes], ingestion: Ingestion) -> dict[str, Any]:
    walls = []
    sent_before = ingestion.counts()
    cpu_before = time.process_time()
    for body in bodies:
        started = time.perf_counter()
        result = forwarder.handle(body, uuid.uuid4().hex)
        if flush is not None:
            flush()
        walls.append(time.perf_counter() - started)
        assert result.status == "forwarded", result.reason
    cpu = time.process_time() - cpu_before
    sent = [after - before for after, before in zip(ingestion.counts(), sent_before, strict=True)]
    return {"walls": walls, "cpu": cpu, "requests": sent[0], "bytes": sent[1], "items": sent[2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=60, help="invocations per block (4 blocks per mode)")
    args = parser.parse_args()
    ingestion = Ingestion()
    threading.Thread(target=ingestion.serve_forever, daemon=True).start()
    os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"] = (
        "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
        f"IngestionEndpoint=http://127.0.0.1:{ingestion.server_address[1]}/;"
        f"LiveEndpoint=http://127.0.0.1:{ingestion.server_address[1]}/"
    )
    os.environ["APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL"] = "true"  # its own channel, to Microsoft
    os.environ["OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"] = "otel"  # no Azure VM metadata probe off Azure
    os.environ["SERVICENOW_DEFAULT_PASSWORD"] = PASSWORD
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)

    # Imported after the environment is set: the product's modules as the function app imports them.
    from shared.alerting.rules_store import write_rules
    from shared.app.forwarding import build_forwarder
    from shared.platform import telemetry
    from shared.platform.storage import blob_service
    from shared.settings import load_settings

    assert telemetry.configure(), "the Azure Monitor distro was not installed"
    logging.getLogger("shared").setLevel(logging.INFO)  # the app's log lines, exported as the app's are
    azurite = start_azurite()
    from opentelemetry import metrics

    provider: Any = metrics.get_meter_provider()
    modes = {"none": None, "metrics": lambda: provider.force_flush(timeout_millis=5_000), "all": telemetry.flush}
    rows: dict[tuple[int, str], list[dict[str, Any]]] = {}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            emulator = ServiceNowEmulator(tls_dir=Path(scratch) / "tls", users={USER: PASSWORD}).start()
            try:
                emulator.faults.configure({"latency_ms": SERVICENOW_LATENCY_MS})
                settings = load_settings(product_environ(emulator, azurite))
                write_rules(settings.forwarding.rules_location, blob_service(settings.alerts_storage), RULES)
                forwarder = build_forwarder(settings)
                run_block(forwarder, telemetry.flush, alerts(5, "warm"), ingestion)  # connections, rules
                for latency in INGESTION_LATENCIES_MS:
                    ingestion.latency = latency / 1000
                    for block in range(BLOCKS):
                        order = list(modes) if block % 2 == 0 else list(reversed(modes))
                        for mode in order:
                            bodies = alerts(args.alerts, f"{latency}-{block}-{mode}")
                            rows.setdefault((latency, mode), []).append(
                                run_block(forwarder, modes[mode], bodies, ingestion)
                            )
            finally:
                emulator.stop()
    finally:
        azurite.stop()
    write(rows, args.alerts, ingestion.live_metrics)


MODES = {
    "none": "none (today: on SIGTERM only)",
    "metrics": "the meter provider's `force_flush`",
    "all": "`telemetry.flush()`: metrics, logs, traces",
}


def write(rows: dict[tuple[int, str], list[dict[str, Any]]], per_block: int, live_metrics: int) -> None:
    table = [
        "| ingestion latency | flush after each invocation | wall median | wall p95 | CPU per invocation "
        "| ingestion requests per invocation | bytes per invocation |",
        "|---|---|---|---|---|---|---|",
    ]
    summary: dict[tuple[int, str], dict[str, float]] = {}
    for (latency, mode), blocks in sorted(rows.items(), key=lambda item: (item[0][0], list(MODES).index(item[0][1]))):
        walls = sorted(w for b in blocks for w in b["walls"])
        n = len(walls)
        figures = {
            "median": statistics.median(walls) * 1000,
            "p95": walls[int(0.95 * (n - 1))] * 1000,
            "cpu": sum(b["cpu"] for b in blocks) / n * 1000,
            "requests": sum(b["requests"] for b in blocks) / n,
            "bytes": sum(b["bytes"] for b in blocks) / n,
        }
        summary[(latency, mode)] = figures
        table.append(
            f"| {latency} ms | {MODES[mode]} | {figures['median']:.1f} ms "
            f"| {figures['p95']:.1f} ms | {figures['cpu']:.2f} ms | {figures['requests']:.2f} "
            f"| {figures['bytes']:,.0f} |"
        )
    ratios = []
    for latency in INGESTION_LATENCIES_MS:
        without = summary[(latency, "none")]
        for mode in ("metrics", "all"):
            with_ = summary[(latency, mode)]
            ratios.append(
                f"- at {latency} ms ingestion latency, {MODES[mode]} after each invocation adds "
                f"{with_['median'] - without['median']:.1f} ms to the median invocation "
                f"(**{with_['median'] / without['median']:.2f}×** its wall time), "
                f"{with_['cpu'] - without['cpu']:.2f} ms of CPU ({with_['cpu'] / without['cpu']:.2f}×), and "
                f"{with_['requests']:.2f} ingestion requests per invocation instead of {without['requests']:.3f}."
            )
    lines = [
        "# A telemetry flush per invocation",
        "",
        f"Produced by `.venv/bin/python -m bench.telemetry_flush --alerts {per_block}`.",
        "",
        describe(),
        f"Per ingestion latency and mode, {BLOCKS} blocks of {per_block} invocations, the three modes in "
        "alternating order (none, metrics, all; then all, metrics, none). An invocation is `Forwarder.handle` "
        "of a new alert (ledger in Azurite, one record "
        f"created in the ServiceNow emulator at {SERVICENOW_LATENCY_MS} ms added latency). Telemetry: "
        "`configure_azure_monitor` as the app installs it (azure-monitor-opentelemetry, metrics export every "
        "60 s), sending to a local HTTP stand-in for the ingestion endpoint that answers after the stated "
        "latency; the flush is `shared.platform.telemetry.flush()` (meter, tracer and logger providers). CPU is "
        "the whole process's (exporter threads included) divided by the invocations.",
        "",
        *table,
        "",
        *ratios,
        "",
        f"Besides: {live_metrics} live-metrics pings over the run (the distro's default; a flush does not send "
        "them), not counted above.",
        "",
    ]
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
