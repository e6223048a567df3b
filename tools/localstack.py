"""`make run`: the product's local stack on this machine, on fixed ports, until Ctrl-C.

Starts Azurite (blob 10000, queue 10001, table 10002, data kept in .azurite/) and the ServiceNow
emulator (https://localhost:8443, CA in .local/tls/), writes local.settings.json from the example
when there is none, and creates the queues the settings name. The same local.settings.json serves
`func start` for those who have the Functions Core Tools.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueServiceClient

from tools.servicenow_emulator import OAuthClient, ServiceNowEmulator
from tools.servicenow_emulator.__main__ import DEFAULT_CLIENT, DEFAULT_USER

ROOT = Path(__file__).resolve().parent.parent
AZURITE_PORTS = {"blob": 10000, "queue": 10001, "table": 10002}
DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
DEV_CONNECTION_STRING = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    f"AccountKey={DEV_ACCOUNT_KEY};"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


class StackError(RuntimeError):
    """The local stack cannot start; the message says why and what to do."""


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"Azurite exited with code {process.returncode}; see .local/azurite.log")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise StackError(f"Azurite did not open port {port} within {timeout:g} s; see .local/azurite.log")


def start_azurite() -> subprocess.Popen[bytes]:
    binary = ROOT / "node_modules" / ".bin" / "azurite"
    if not binary.exists():
        raise StackError("Azurite is not installed; run `make run` (it runs `npm ci`) rather than this module directly")
    busy = [f"{name} {port}" for name, port in AZURITE_PORTS.items() if not port_is_free(port)]
    if busy:
        raise StackError(f"ports in use: {', '.join(busy)}; stop the other Azurite (or whatever holds them) first")
    log = (ROOT / ".local").joinpath("azurite.log")
    log.parent.mkdir(exist_ok=True)
    arguments = [
        str(binary),
        "--silent",
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--location",
        str(ROOT / ".azurite"),
    ]
    for name, port in AZURITE_PORTS.items():
        arguments += [f"--{name}Host", "127.0.0.1", f"--{name}Port", str(port)]
    with log.open("ab") as output:
        process = subprocess.Popen(arguments, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603
    for port in AZURITE_PORTS.values():
        wait_for_port(port, process)
    return process


def ensure_local_settings(emulator: ServiceNowEmulator) -> dict[str, str]:
    """local.settings.json from the example, pointing at this stack; an existing file is kept as is."""
    path = ROOT / "local.settings.json"
    if not path.exists():
        document = json.loads((ROOT / "local.settings.json.example").read_text())
        document["Values"]["SERVICENOW_CA_BUNDLE"] = str(emulator.ca_pem.resolve())
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {path.name} from local.settings.json.example")
    values: dict[str, str] = json.loads(path.read_text())["Values"]
    return values


def storage_connection(values: dict[str, str], name: str) -> str:
    value = values.get(name, "")
    return DEV_CONNECTION_STRING if value == "UseDevelopmentStorage=true" else value


def provision(values: dict[str, str]) -> list[str]:
    """Create the queues the settings name (and their poison queues)."""
    service = QueueServiceClient.from_connection_string(storage_connection(values, "ALERTS_STORAGE"))
    created = []
    for queue in (values["ALERTS_QUEUE"], f"{values['ALERTS_QUEUE']}-poison"):
        with contextlib.suppress(ResourceExistsError):
            service.create_queue(queue)
        created.append(queue)
    return created


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.localstack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--once", action="store_true", help="start, provision, report and stop (no waiting)")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if shutil.which("node") is None:
        print("Node.js is required for Azurite (npm registry package); install node first", file=sys.stderr)
        return 2
    if not port_is_free(8443):
        print("port 8443 is in use; stop the other ServiceNow emulator first", file=sys.stderr)
        return 2
    try:
        azurite = start_azurite()
    except StackError as exc:
        print(f"cannot start the local stack: {exc}", file=sys.stderr)
        return 2
    user, password = DEFAULT_USER.split(":", 1)
    client_id, client_secret = DEFAULT_CLIENT.split(":", 1)
    emulator = ServiceNowEmulator(
        port=8443,
        tls_dir=ROOT / ".local" / "tls",
        users={user: password},
        clients=[OAuthClient(client_id, client_secret)],
    ).start()
    try:
        values = ensure_local_settings(emulator)
        queues = provision(values)
        print("local stack is up:")
        print("  Azurite            blob :10000  queue :10001  table :10002   (data in .azurite/)")
        print(f"  ServiceNow         {emulator.url}   user {user}   CA {emulator.ca_pem}")
        print(f"  queues             {', '.join(queues)}")
        print("  settings           local.settings.json (also read by `func start`)")
        if not args.once:
            print("Ctrl-C stops everything.", flush=True)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
    finally:
        emulator.stop()
        azurite.terminate()
        try:
            azurite.wait(timeout=10)
        except subprocess.TimeoutExpired:
            azurite.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
