"""Start and stop Azurite (installed by npm from package-lock.json) for make run, tests and benchmarks."""

from __future__ import annotations

import contextlib
import socket
import subprocess  # starts Azurite from node_modules  # nosec B404
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Azurite's well-known development account key, published by Microsoft; it guards nothing.
DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteError(RuntimeError):
    """Azurite could not be started; the message says why and what to do."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class Azurite:
    blob_port: int
    queue_port: int
    table_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def connection_string(self) -> str:
        return (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={DEV_ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.blob_port}/devstoreaccount1;"
            f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/devstoreaccount1;"
            f"TableEndpoint=http://127.0.0.1:{self.table_port}/devstoreaccount1;"
        )

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_azurite(
    blob_port: int = 0,
    queue_port: int = 0,
    table_port: int = 0,
    *,
    location: Path | None = None,
    log: Path | None = None,
    debug_log: Path | None = None,
    timeout: float = 30.0,
    check_api_version: bool = False,
) -> Azurite:
    """Start Azurite; port 0 picks a free port; no ``location`` keeps everything in memory.

    ``check_api_version``: refuse SDKs newer than this Azurite, as Azurite does by default (the pinned SDKs
    are newer, so the stack skips the check).
    """
    binary = ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        raise AzuriteError("Azurite is not installed: run `make run` or `make test`, which run `npm ci` first")
    azurite = Azurite(blob_port or free_port(), queue_port or free_port(), table_port or free_port())
    ports = {"blob": azurite.blob_port, "queue": azurite.queue_port, "table": azurite.table_port}
    busy = [f"{name} {port}" for name, port in ports.items() if not port_is_free(port)]
    if busy:
        raise AzuriteError(f"ports in use: {', '.join(busy)}; stop whatever holds them (another Azurite?) first")
    arguments = [str(binary), "--silent", "--disableTelemetry"]
    arguments += [] if check_api_version else ["--skipApiVersionCheck"]
    arguments += ["--location", str(location)] if location else ["--inMemoryPersistence"]
    arguments += ["--debug", str(debug_log)] if debug_log else []  # every request, for counting them
    for name, port in ports.items():
        arguments += [f"--{name}Host", "127.0.0.1", f"--{name}Port", str(port)]
    output = log.open("ab") if log else subprocess.DEVNULL
    try:
        # Its own process group: a Ctrl-C in the terminal must not stop storage under a host still finishing.
        azurite.process = subprocess.Popen(  # noqa: S603 - Azurite from node_modules  # nosec B603
            arguments, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        if log:
            output.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    for port in ports.values():
        while True:
            if azurite.process.poll() is not None:
                raise AzuriteError(
                    f"Azurite exited with code {azurite.process.returncode}" + (f"; see {log}" if log else "")
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            if time.monotonic() > deadline:
                azurite.stop()
                raise AzuriteError(f"Azurite did not open port {port} within {timeout:g} s")
            time.sleep(0.1)
    return azurite
