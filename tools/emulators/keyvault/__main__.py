"""Start the Key Vault emulator: ``python -m tools.emulators.keyvault --port 8444``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.emulators.keyvault.server import KeyVaultEmulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.emulators.keyvault", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8444)
    parser.add_argument("--tls-dir", type=Path, default=Path(".local/tls"))
    args = parser.parse_args(argv)
    emulator = KeyVaultEmulator(host=args.host, port=args.port, tls_dir=args.tls_dir)
    return emulator.serve_until_stopped(
        lambda: [f"Key Vault emulator listening on {emulator.url} (CA {emulator.ca_pem.resolve()})"]
    )


if __name__ == "__main__":
    sys.exit(main())
