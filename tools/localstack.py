"""`make run`: the product's local stack on this machine, on fixed ports, until Ctrl-C.

Starts Azurite (blob 10000, queue 10001, table 10002, data kept in .azurite/) and the ServiceNow
emulator (https://localhost:8443, CA in .local/tls/), writes local.settings.json from the example
when there is none, creates the queues the settings name, and runs function_app.py in the local
Functions host. The same host.json and local.settings.json serve `func start` for those who have the
Functions Core Tools.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess  # starts the local host with this interpreter  # nosec B404
import sys
import threading
from pathlib import Path

from azure.core.exceptions import ResourceExistsError

from shared.secrets import KeyVaultSecretStore, Secret, secret_store
from shared.settings import Settings, load_settings
from shared.storage import queue_service, table_service
from shared.tokens import connect
from tools.azurite import AzuriteError, port_is_free, start_azurite
from tools.console_emulator import ConsoleEmulator, generate
from tools.demo import run_demo
from tools.keyvault_emulator import KeyVaultEmulator
from tools.servicenow_emulator import OAuthClient, ServiceNowEmulator
from tools.servicenow_emulator.__main__ import DEFAULT_CLIENT, DEFAULT_USER

ROOT = Path(__file__).resolve().parent.parent
AZURITE_PORTS = (10000, 10001, 10002)
EMULATOR_PORT = 8443
KEY_VAULT_PORT = 8444
CONSOLE_PORT = 8445
DEMO_DEVICES = 200


class StackError(RuntimeError):
    """The local stack cannot start; the message says why and what to do."""


def ensure_local_settings(emulator: ServiceNowEmulator) -> dict[str, str]:
    """local.settings.json from the example, pointing at this stack; an existing file is kept as is."""
    path = ROOT / "local.settings.json"
    if not path.exists():
        document = json.loads((ROOT / "local.settings.json.example").read_text())
        document["Values"]["SERVICENOW_CA_BUNDLE"] = str(emulator.ca_pem.resolve())
        document["Values"]["KEY_VAULT_CA_BUNDLE"] = str(emulator.ca_pem.resolve())
        document["Values"]["CONSOLE_CA_BUNDLE"] = str(emulator.ca_pem.resolve())
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"wrote {path.name} from local.settings.json.example")
    values: dict[str, str] = json.loads(path.read_text())["Values"]
    return values


def provision(settings: Settings) -> list[str]:
    """Create the queues the settings name (and their poison queues); start the device sync afresh.

    The ServiceNow emulator keeps its records in memory, so each run starts with an empty CMDB, while
    Azurite keeps its data in .azurite/: the sync's hashes and watermarks from an earlier run would
    describe records that are gone, and the sync would skip the devices it thinks it wrote.
    """
    service = queue_service(settings.alerts_storage)
    created = []
    for queue in (settings.alerts_queue, f"{settings.alerts_queue}-poison"):
        with contextlib.suppress(ResourceExistsError):
            service.create_queue(queue)
        created.append(queue)
    # No error when the table does not exist.
    table_service(settings.alerts_storage).delete_table(settings.device_sync.state_table)
    return created


def seed_secrets(settings: Settings, password: str, client_secret: str, console_token: str) -> str:
    """Put the demo's secrets where the app reads them, as an operator would in Azure.

    OAuth connections: the client secret into Key Vault, then `connect` (the password grant, once;
    the password is not stored). Basic connections: the password into Key Vault.
    """
    if settings.key_vault is None:
        return "secrets from local.settings.json"
    store = secret_store(settings)
    assert isinstance(store, KeyVaultSecretStore)
    store.write(settings.device_sync.console_token_secret, Secret(console_token), content_type="text/plain")
    connection = settings.connection("default")
    if connection.auth in ("oauth", "client_credentials"):
        store.write(
            connection.secret_name("client-secret"),
            Secret(client_secret),
            content_type="text/plain",
            tags={"connection": connection.name},
        )
        report = connect(connection, settings, connection.username or "", Secret(password))
        return f"OAuth: signed in with connect; access-token lifespan {report.access_lifespan_seconds} s"
    store.write(
        connection.secret_name("password"),
        Secret(password),
        content_type="text/plain",
        tags={"connection": connection.name},
    )
    return "Basic: password in Key Vault"


def start_host() -> subprocess.Popen[str]:
    """The local Functions host in its own process, as `func start` would run the app."""
    process = subprocess.Popen(  # noqa: S603 - the project's own interpreter and module  # nosec B603
        [sys.executable, "-m", "tools.funchost", "--app-dir", str(ROOT)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert process.stdout is not None
    for line in process.stdout:
        print(f"  host | {line}", end="")
        if "local Functions host running" in line:
            threading.Thread(target=_relay, args=(process,), daemon=True).start()
            return process
    raise StackError(f"the local host exited with code {process.wait()} before it started")


def _relay(process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        print(f"  host | {line}", end="", flush=True)


def stop_host(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # graceful: running invocations finish
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.localstack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--once", action="store_true", help="start everything, play the demo, report, and stop")
    parser.add_argument("--no-demo", action="store_true", help="start the stack without enqueuing demo alerts")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if shutil.which("node") is None:
        print("Node.js is required for Azurite (npm registry package); install node first", file=sys.stderr)
        return 2
    ports = (
        (EMULATOR_PORT, "ServiceNow emulator"),
        (KEY_VAULT_PORT, "Key Vault emulator"),
        (CONSOLE_PORT, "management console emulator"),
    )
    for port, what in ports:
        if not port_is_free(port):
            print(f"port {port} is in use; stop the other {what} first", file=sys.stderr)
            return 2
    (ROOT / ".local").mkdir(exist_ok=True)
    try:
        azurite = start_azurite(*AZURITE_PORTS, location=ROOT / ".azurite", log=ROOT / ".local" / "azurite.log")
    except AzuriteError as exc:
        print(f"cannot start the local stack: {exc}", file=sys.stderr)
        return 2
    user, password = DEFAULT_USER.split(":", 1)
    client_id, client_secret = DEFAULT_CLIENT.split(":", 1)
    emulator = ServiceNowEmulator(
        port=EMULATOR_PORT,
        tls_dir=ROOT / ".local" / "tls",
        users={user: password},
        clients=[OAuthClient(client_id, client_secret)],
    ).start()
    vault = KeyVaultEmulator(port=KEY_VAULT_PORT, tls_dir=ROOT / ".local" / "tls").start()
    console = ConsoleEmulator(generate(DEMO_DEVICES), port=CONSOLE_PORT, tls_dir=ROOT / ".local" / "tls").start()
    host = None
    try:
        settings = load_settings(ensure_local_settings(emulator))
        signed_in = seed_secrets(settings, password, client_secret, console.token)
        queues = provision(settings)
        host = start_host()
        if not args.no_demo:
            print("playing the demo: rules applied, alerts enqueued; waiting for the host to process them…", flush=True)
            print(run_demo(settings, emulator), flush=True)
        print("local stack is up:")
        print("  Azurite            blob :10000  queue :10001  table :10002   (data in .azurite/)")
        print(f"  ServiceNow         {emulator.url}   user {user}   CA {emulator.ca_pem}")
        print(f"  Key Vault          {vault.url}   ({signed_in})")
        print(
            f"  Management console {console.url}   ({DEMO_DEVICES} generated devices; sync every "
            f"{settings.device_sync.frequency_minutes} min)"
        )
        print(f"  queues             {', '.join(queues)}")
        print("  Functions host     function_app.py via tools.funchost (func start reads the same files)")
        print("  settings           local.settings.json")
        if not args.once:
            print("Ctrl-C stops everything.", flush=True)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
    except StackError as exc:
        print(f"cannot start the local stack: {exc}", file=sys.stderr)
        return 2
    finally:
        if host is not None:
            stop_host(host)
        emulator.stop()
        vault.stop()
        console.stop()
        azurite.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
