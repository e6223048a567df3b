"""Run function_app.py locally against Azurite: ``python -m tools.funchost``.

Reads host.json and local.settings.json from the app folder, discovers the functions from their
binding metadata, and runs queue and timer triggers with the host's semantics until Ctrl-C, when
running invocations finish (each up to functionTimeout) and nothing is released: a message still
running when it exits returns when its receive lease lapses. An invocation that passes
functionTimeout restarts the process with the same command line, as the host restarts the worker:
every invocation then in flight dies, and its message too returns only when its lease lapses.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tools.funchost.config import HostConfigError, load_host_json, load_local_settings, with_overrides
from tools.funchost.host import FunctionHost, default_host_id, load_app
from tools.funchost.invoke import restart_process
from tools.funchost.queues import QueueTimings
from tools.shutdown import wait_for_shutdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.funchost", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--app-dir", type=Path, default=Path.cwd(), help="folder with function_app.py and host.json")
    parser.add_argument("--settings", type=Path, help="default: <app-dir>/local.settings.json")
    parser.add_argument("--host-id", help="hosts sharing an id share timer leases (default: derived from the folder)")
    parser.add_argument(
        "--receive-visibility",
        type=int,
        default=QueueTimings.receive_visibility,
        metavar="SECONDS",
        help="how long a received message stays invisible, renewed at half that while it runs (the Functions host: "
        "600); a crashed host's messages return after it, so fault campaigns shorten it",
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("azure").setLevel(logging.WARNING)
    # azure-functions logs this for every app without HTTP functions; it says nothing about this app.
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: not record.getMessage().startswith("Auth level is not applied"))
    app_dir = args.app_dir.resolve()
    try:
        settings = load_local_settings(args.settings or app_dir / "local.settings.json")
        host_json = with_overrides(load_host_json(app_dir / "host.json"), settings)
        app = load_app(app_dir, settings)
        timings = QueueTimings(receive_visibility=args.receive_visibility, renew_every=args.receive_visibility / 2)
        host = FunctionHost(
            app,
            settings,
            host_json,
            args.host_id or default_host_id(app_dir),
            queue_timings=timings,
            on_timeout=restart_process,
        ).build()
    except HostConfigError as exc:
        print(f"local host cannot start: {exc}", file=sys.stderr)
        return 2
    host.start()
    print(
        f"local Functions host running {', '.join(host.listeners)} (host id {host.host_id}); Ctrl-C stops", flush=True
    )
    wait_for_shutdown()
    print("stopping: letting running invocations finish…", flush=True)
    if host.stop():
        # The interpreter's exit would wait for the worker threads still running; the host's would not.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
