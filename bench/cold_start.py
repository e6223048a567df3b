"""Cold start: what a fresh worker process pays before it does useful work.

Each figure is the median of several fresh processes, timed from the first line the process runs:

- ``import azure.functions`` alone (the floor any Python function app pays);
- ``import function_app`` (what the host does to index the functions: settings validation included);
- the first completed invocation of each function in a fresh process (import + first call, against
  Azurite, the Key Vault emulator, the ServiceNow emulator and the console emulator), and a second
  invocation in the same process for comparison.

Run: `.venv/bin/python -m bench.cold_start [--runs 5] [--baseline DIR]`; writes bench/results/cold_start.md.
``--baseline`` names another checkout (say, main's tree before a change): each run then starts the same
children there too, alternating which goes first, and the table adds its figures and the ratio of the two,
measured in the same run against the same emulators.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.child import run_child
from tools.machine import describe

RESULTS = Path(__file__).parent / "results" / "cold_start.md"
FUNCTIONS = ("alert_forwarder", "token_refresh", "device_sync_timer")


def child(spec: dict[str, Any]) -> None:
    """In a fresh process: import, then invoke one function twice; print the timings (ms)."""
    import time  # the clock starts before anything else is imported

    started = time.perf_counter()
    if spec["what"] == "azure.functions":
        import azure.functions  # noqa: F401

        print(json.dumps({"import": 1000 * (time.perf_counter() - started)}))
        return
    import function_app

    imported = time.perf_counter()
    import azure.functions as func

    user = next(f for f in function_app.app.get_functions() if f.get_function_name() == spec["what"])
    call = user.get_user_function()

    def invoke(number: int) -> float:
        begun = time.perf_counter()
        if spec["what"] == "alert_forwarder":
            body = json.dumps(spec["alerts"][number]).encode()
            call(func.queue.QueueMessage(id=uuid.uuid4().hex, body=body, dequeue_count=1))
        else:
            call(func.timer.TimerRequest(past_due=False))
        return time.perf_counter() - begun

    invoke(0)
    first = time.perf_counter()
    second = invoke(1)
    print(
        json.dumps(
            {
                "import": 1000 * (imported - started),
                "first": 1000 * (first - started),
                "second": 1000 * second,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--baseline", type=Path, help="another checkout to measure in the same run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    logging.disable(logging.WARNING)
    from shared.app import secret_store
    from shared.platform.secrets import KeyVaultSecretStore, Secret
    from tools.emulators.console import ConsoleEmulator, generate
    from tools.stack.appstack import AppStack, alert_document

    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        console = ConsoleEmulator(generate(20, seed=5), tls_dir=workdir / "tls").start()
        try:
            overrides = {
                "DEVICE_SYNC_ENABLED": "true",
                "CONSOLE_URL": console.url,
                "CONSOLE_CA_BUNDLE": str(console.ca_pem),
                "DEVICE_SYNC_STATE_TABLE": f"sync{uuid.uuid4().hex[:10]}",
                # Every child is a new instance on the ServiceNow budget's board and stays live there for a while;
                # past 16 of them (more than 5 runs, or a baseline) the last would get no share of the default 16.
                "SERVICENOW_CONCURRENCY": "1000",
            }
            with AppStack(workdir, settings=overrides) as stack:
                store = secret_store(stack.settings)
                assert isinstance(store, KeyVaultSecretStore)
                store.write(
                    stack.settings.device_sync.console_token_secret, Secret(console.token), content_type="text/plain"
                )
                environ = {k: v for k, v in stack.values.items() if k != "FUNCTIONS_WORKER_RUNTIME"}
                trees = {"": None} if args.baseline is None else {"": None, "baseline": args.baseline.resolve()}
                rows: dict[str, list[dict[str, float]]] = {}
                for run in range(args.runs):
                    for what in ("azure.functions", *FUNCTIONS):
                        for tree, cwd in sorted(trees.items(), reverse=run % 2 == 1):  # alternate who goes first
                            if what == "device_sync_timer":
                                # Every run is a first sync: a fresh state table, so the timer finds it due.
                                environ["DEVICE_SYNC_STATE_TABLE"] = f"sync{uuid.uuid4().hex[:10]}"
                            alerts = [alert_document(i, f"cold{run}{tree}") for i in range(2)]
                            rows.setdefault(tree + what, []).append(
                                run_child("bench.cold_start", {"what": what, "alerts": alerts}, env=environ, cwd=cwd)
                            )
        finally:
            console.stop()

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[name])

    def figures(tree: str) -> list[tuple[str, float]]:
        """(row, median ms) of one tree's children."""
        app_import = statistics.median(r["import"] for name in FUNCTIONS for r in rows[tree + name])
        found = [
            ("`import azure.functions`", median(tree + "azure.functions", "import")),
            ("`import function_app` (indexing, settings validated)", app_import),
        ]
        for name in FUNCTIONS:
            found.append((f"{name}: import + first invocation", median(tree + name, "first")))
            found.append((f"{name}: second invocation (same process)", median(tree + name, "second")))
        return found

    ours = figures("")
    bare = ours[0][1]
    if args.baseline is None:
        lines = ["| what | median ms | ÷ bare `import azure.functions` |", "|---|---|---|"]
        lines += [f"| {row} | {ms:.0f} | {ms / bare:.2f} |" for row, ms in ours]
    else:
        lines = [
            f"Baseline: `--baseline {args.baseline}`, measured in the same run (its children alternate with these).",
            "",
            "| what | median ms | ÷ bare `import azure.functions` | baseline median ms | ÷ baseline |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {row} | {ms:.0f} | {ms / bare:.2f} | {base:.0f} | {ms / base:.2f} |"
            for (row, ms), (_, base) in zip(ours, figures("baseline"), strict=True)
        ]
    text = "\n".join(
        [
            "# Cold start",
            "",
            "Produced by `.venv/bin/python -m bench.cold_start"
            + ("" if args.runs == 5 else f" --runs {args.runs}")
            + ("`" if args.baseline is None else f" --baseline {args.baseline}`")
            + f" (median of {args.runs} fresh processes each).",
            "",
            describe(),
            *lines,
            "",
            "Timed from the first line each fresh process runs (interpreter start-up itself is not included, "
            "the same for every row). The forwarder's first invocation creates its queue clients, reads the "
            "rules and an OAuth token from Key Vault and writes one incident; token_refresh reads the "
            "tokens' expiry from Key Vault; device_sync_timer runs a first sync of 20 devices. The second "
            "invocation: the forwarder writes another incident with everything warm; the timers find nothing "
            "due. Importing "
            "function_app.py loads no storage, Key Vault, identity or monitoring SDK: each function imports "
            "what it needs on its first invocation (tests/unit/test_function_app.py holds that).",
            "",
        ]
    )
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
