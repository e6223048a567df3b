"""Start the Key Vault emulator: ``python -m tools.keyvault_emulator --port 8444``."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path

from tools.keyvault_emulator.server import KeyVaultEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.keyvault_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8444)
    parser.add_argument("--tls-dir", type=Path, default=Path(".local/tls"))
    args = parser.parse_args(argv)
    emulator = KeyVaultEmulator(host=args.host, port=args.port, tls_dir=args.tls_dir)
    try:
        emulator.start()
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"Key Vault emulator listening on {emulator.url} (CA {emulator.ca_pem.resolve()})", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
