"""Start the management console emulator: ``python -m tools.emulators.console --port 8445 --devices 200``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.emulators.console.inventory import generate
from tools.emulators.console.server import DEFAULT_TOKEN, ConsoleEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.emulators.console", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8445, help="0 picks a free port")
    parser.add_argument("--tls-dir", type=Path, default=Path(".local/tls"), help="where the test CA lives")
    parser.add_argument("--devices", type=int, default=200, help="size of the generated inventory")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated inventory")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="the API token it accepts")
    args = parser.parse_args(argv)
    emulator = ConsoleEmulator(
        generate(args.devices, seed=args.seed), token=args.token, host=args.host, port=args.port, tls_dir=args.tls_dir
    )
    return emulator.serve_until_stopped(
        lambda: [
            f"management console emulator listening on {emulator.url} ({args.devices} devices)",
            f"  API token: the one given by --token (default {DEFAULT_TOKEN!r}); CA {emulator.ca_pem.resolve()}",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
