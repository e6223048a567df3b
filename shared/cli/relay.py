"""``relay``: poll a locally managed sensor next to it and send its alerts outward to the alerts queue."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from shared.app.relay import Relay
from shared.cli.context import CommandError
from shared.settings import load_relay_settings


@click.command()
@click.option("--source", "source_name", required=True, metavar="NAME", help="The sensor source in DEFENDER_SOURCES.")
@click.option(
    "--state",
    "state_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("relay-state.sqlite"),
    show_default=True,
    help="Where the relay remembers what it sent (keep it on persistent storage).",
)
@click.option(
    "--interval", type=click.FloatRange(5, 3600), default=60.0, show_default=True, help="Seconds between polls."
)
@click.option("--once", is_flag=True, help="Poll once and exit (1 if the sensor could not be read).")
def relay(source_name: str, state_path: Path, interval: float, once: bool) -> int:
    """Send a locally managed sensor's alerts to the alerts queue, from next to the sensor.

    Reads ALERTS_QUEUE, ALERTS_STORAGE (a connection string, or ALERTS_STORAGE__queueServiceUri with a
    service principal in AZURE_TENANT_ID / AZURE_CLIENT_ID / AZURE_CLIENT_SECRET) and DEFENDER_SOURCES; the
    sensor's token from Key Vault (KEY_VAULT_URL) or the environment. See docs/relay.md.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    settings = load_relay_settings(source_name)
    try:
        worker = Relay(settings, state_path)
    except OSError as exc:
        raise CommandError(f"--state {state_path}: cannot use it ({exc})") from None
    if once:
        return 0 if worker.cycle() is not None else 1
    worker.run(interval)
    return 0
