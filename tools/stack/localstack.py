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
import time
from dataclasses import dataclass
from pathlib import Path

from azure.core.exceptions import ResourceExistsError

from shared.alerting.poison import poison_queue_name
from shared.app import secret_store
from shared.app.tokens import connect_connection
from shared.platform.secrets import KeyVaultSecretStore, Secret
from shared.platform.settings import SettingsError
from shared.platform.storage import queue_service, table_service
from shared.settings import Settings, load_settings
from tools.emulators.console import ConsoleEmulator, generate
from tools.emulators.keyvault import KeyVaultEmulator
from tools.emulators.resourcegraph import ResourceGraphEmulator
from tools.emulators.sensor import SensorEmulator
from tools.emulators.servicenow import OAuthClient, ServiceNowEmulator
from tools.emulators.servicenow.__main__ import DEFAULT_CLIENT, DEFAULT_USER
from tools.funchost.config import HostConfigError, load_local_settings
from tools.shutdown import wait_for_shutdown
from tools.stack.azurite import AzuriteError, port_is_free, start_azurite
from tools.stack.demo import run_demo

ROOT = Path(__file__).resolve().parents[2]
AZURITE_PORTS = (10000, 10001, 10002)
EMULATOR_PORT = 8443
KEY_VAULT_PORT = 8444
CONSOLE_PORT = 8445
RESOURCE_GRAPH_PORT = 8446
SENSOR_PORT = 8447
DEMO_DEVICES = 200


class StackError(RuntimeError):
    """The local stack cannot start; the message says why and what to do."""


def ensure_local_settings(emulator: ServiceNowEmulator) -> dict[str, str]:
    """local.settings.json from the example, pointing at this stack. An existing file is kept, but a setting
    the example gained since it was written (a new function's schedule, say) is added to it, and named."""
    path = ROOT / "local.settings.json"
    example = json.loads((ROOT / "local.settings.json.example").read_text())
    ca = str(emulator.ca_pem.resolve())
    for name, value in example["Values"].items():  # the emulators' CA, wherever the example names it
        example["Values"][name] = value.replace(".local/tls/ca.pem", ca)
    if not path.exists():
        path.write_text(json.dumps(example, indent=2) + "\n")
        print(f"wrote {path.name} from local.settings.json.example")
    try:
        values = load_local_settings(path)
    except HostConfigError as exc:
        raise StackError(str(exc)) from None
    missing = {k: v for k, v in example["Values"].items() if k not in values}
    if missing:
        document = json.loads(path.read_text())
        document["Values"].update(missing)
        path.write_text(json.dumps(document, indent=2) + "\n")
        print(f"added to {path.name} from the example: {', '.join(sorted(missing))}")
        values.update(missing)
    return values


def provision(settings: Settings) -> list[str]:
    """Create the queues the settings name (and their poison queues); start the device sync afresh.

    The ServiceNow emulator keeps its records in memory, so each run starts with an empty CMDB, while
    Azurite keeps its data in .azurite/: the sync's hashes and watermarks from an earlier run would
    describe records that are gone, and the sync would skip the devices it thinks it wrote.
    """
    service = queue_service(settings.alerts_storage)
    created = []
    for queue in (settings.alerts_queue, poison_queue_name(settings.alerts_queue)):
        with contextlib.suppress(ResourceExistsError):
            service.create_queue(queue)
        created.append(queue)
    # No error when the table does not exist.
    table_service(settings.alerts_storage).delete_table(settings.device_sync.state_table)
    return created


def seed_secrets(settings: Settings, password: str, client_secret: str, console_token: str, sensor_token: str) -> str:
    """Put the demo's secrets where the app reads them, as an operator would in Azure.

    OAuth connections: the client secret into Key Vault, then `connect` (the password grant, once;
    the password is not stored). Basic connections: the password into Key Vault.
    """
    if settings.key_vault is None:
        return "secrets from local.settings.json"
    store = secret_store(settings)
    assert isinstance(store, KeyVaultSecretStore)
    store.write(settings.device_sync.console_token_secret, Secret(console_token), content_type="text/plain")
    # The demo sensor's token, under the name a sensor source called "sensor-1" reads (README: three sources).
    store.write("defender-sensor-sensor-1-token", Secret(sensor_token), content_type="text/plain")
    connection = settings.connection("default")
    if connection.auth in ("oauth", "client_credentials"):
        store.write(
            connection.secret_name("client-secret"),
            Secret(client_secret),
            content_type="text/plain",
            tags={"connection": connection.name},
        )
        report = connect_connection(settings, connection, connection.username or "", Secret(password))
        return f"OAuth: signed in with connect; access-token lifespan {report.access_lifespan_seconds} s"
    store.write(
        connection.secret_name("password"),
        Secret(password),
        content_type="text/plain",
        tags={"connection": connection.name},
    )
    return "Basic: password in Key Vault"


def start_host() -> subprocess.Popen[str]:
    """The local Functions host in its own process, as `func start` would run the app.

    Its own process group: a Ctrl-C in the terminal reaches this process only, which then stops the
    stack in order (the host first, so its last storage calls still find Azurite).
    """
    process = subprocess.Popen(  # noqa: S603 - the project's own interpreter and module  # nosec B603
        [sys.executable, "-m", "tools.funchost", "--app-dir", str(ROOT)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
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


def start_stack(stack: contextlib.ExitStack, *, with_host: bool) -> tuple[Settings, StackParts]:
    """Start Azurite, the three emulators and (optionally) the host; each one's stop is pushed on ``stack``,
    so they stop in the reverse order: host, emulators, Azurite last."""
    for port, what in (
        (EMULATOR_PORT, "ServiceNow emulator"),
        (KEY_VAULT_PORT, "Key Vault emulator"),
        (CONSOLE_PORT, "management console emulator"),
        (RESOURCE_GRAPH_PORT, "Resource Graph emulator"),
        (SENSOR_PORT, "sensor emulator"),
    ):
        if not port_is_free(port):
            raise StackError(f"port {port} is in use; stop the other {what} first")
    (ROOT / ".local").mkdir(exist_ok=True)
    try:
        azurite = start_azurite(*AZURITE_PORTS, location=ROOT / ".azurite", log=ROOT / ".local" / "azurite.log")
    except AzuriteError as exc:
        raise StackError(str(exc)) from None
    stack.callback(azurite.stop)
    user, password = DEFAULT_USER.split(":", 1)
    client_id, client_secret = DEFAULT_CLIENT.split(":", 1)
    tls_dir = ROOT / ".local" / "tls"
    emulator = ServiceNowEmulator(
        port=EMULATOR_PORT, tls_dir=tls_dir, users={user: password}, clients=[OAuthClient(client_id, client_secret)]
    ).start()
    stack.callback(emulator.stop)
    vault = KeyVaultEmulator(port=KEY_VAULT_PORT, tls_dir=tls_dir).start()
    stack.callback(vault.stop)
    # One generated world, three views: the console's, the cloud's (Resource Graph) and sensor-1's own API.
    world = generate(DEMO_DEVICES)
    console = ConsoleEmulator(world, port=CONSOLE_PORT, tls_dir=tls_dir).start()
    stack.callback(console.stop)
    graph = ResourceGraphEmulator(port=RESOURCE_GRAPH_PORT, tls_dir=tls_dir).start()
    stack.callback(graph.stop)
    graph.load_world(world)
    sensor = SensorEmulator(world, sensor="sensor-1", port=SENSOR_PORT, tls_dir=tls_dir).start()
    stack.callback(sensor.stop)
    settings = read_settings(ensure_local_settings(emulator))
    signed_in = seed_secrets(settings, password, client_secret, console.token, sensor.token)
    queues = provision(settings)
    host = start_host() if with_host else None
    if host is not None:
        stack.callback(stop_host, host)
    return settings, StackParts(emulator, vault, console, graph, sensor, queues, signed_in, user)


@dataclass
class StackParts:
    emulator: ServiceNowEmulator
    vault: KeyVaultEmulator
    console: ConsoleEmulator
    graph: ResourceGraphEmulator
    sensor: SensorEmulator
    queues: list[str]
    signed_in: str
    user: str


def read_settings(values: dict[str, str]) -> Settings:
    try:
        return load_settings(values)
    except SettingsError as exc:
        raise StackError(f"local.settings.json: {exc}") from None


def describe(settings: Settings, parts: StackParts, *, with_host: bool) -> list[str]:
    lines = [
        "local stack is up:",
        "  Azurite            blob :10000  queue :10001  table :10002   (data in .azurite/)",
        f"  ServiceNow         {parts.emulator.url}   user {parts.user}   CA {parts.emulator.ca_pem}",
        f"  Key Vault          {parts.vault.url}   ({parts.signed_in})",
        f"  Resource Graph     {parts.graph.url}   (cloud-connected sensors, {DEMO_DEVICES} generated devices; "
        f"DEFENDER_SOURCES: alerts every minute, devices every {settings.device_sync.frequency_minutes} min)",
        f"  Management console {parts.console.url}   (the same devices; read when CONSOLE_URL is set)",
        f"  Sensor API         {parts.sensor.url}   (sensor-1's view; read when DEFENDER_SOURCES has a sensor source)",
        f"  queues             {', '.join(parts.queues)}",
    ]
    if with_host:
        lines.append("  Functions host     function_app.py via tools.funchost (func start reads the same files)")
    else:
        lines.append("  Functions host     not started: run `func start` (or `python -m tools.funchost`) beside it")
    lines.append("  settings           local.settings.json")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.stack.localstack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--once", action="store_true", help="start everything, play the demo, report, and stop")
    parser.add_argument("--no-demo", action="store_true", help="start the stack without enqueuing demo alerts")
    parser.add_argument(
        "--emulators-only",
        action="store_true",
        help="Azurite and the emulators with the secrets in place, no host and no demo: for `func start`",
    )
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    if shutil.which("node") is None:
        print("Node.js is required for Azurite (npm registry package); install node first", file=sys.stderr)
        return 2
    with_host = not args.emulators_only
    stopping_since: float | None = None
    try:
        with contextlib.ExitStack() as stack:
            settings, parts = start_stack(stack, with_host=with_host)
            if with_host and not args.no_demo:
                print(
                    "playing the demo: rules applied, alerts enqueued; waiting for the host to process them…",
                    flush=True,
                )
                print(run_demo(settings, parts.emulator, parts.graph), flush=True)
            print("\n".join(describe(settings, parts, with_host=with_host)), flush=True)
            if not args.once:
                print("Ctrl-C stops everything.", flush=True)
                wait_for_shutdown()
            print("stopping: the host, then the emulators, then Azurite…", flush=True)
            stopping_since = time.monotonic()
    except StackError as exc:
        print(f"cannot start the local stack: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the stack is stopped", file=sys.stderr)
        return 130
    if stopping_since is not None:
        print(f"stopped in {time.monotonic() - stopping_since:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
