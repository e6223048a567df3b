"""Operator commands: ``python -m shared [--settings local.settings.json] COMMAND`` (in Azure: with the
app settings in the environment and a sign-in that may use the storage account and the vault).

Each failure is one line that says what was wrong and where; no traceback reaches the user.
"""

from __future__ import annotations

from pathlib import Path

import click
from azure.core.exceptions import AzureError

from shared.cli.connect import connect_command
from shared.cli.context import Operator, load_local_settings, storage_problem
from shared.cli.enqueue import enqueue
from shared.cli.poison import poison
from shared.cli.relay import relay
from shared.cli.rules import rules
from shared.cli.status import status
from shared.cli.sync import sync
from shared.cli.verify import verify
from shared.cli.writeback import writeback
from shared.platform.settings import SettingsError

PROGRAM = "python -m shared"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--settings",
    type=click.Path(path_type=Path, dir_okay=False),
    help="read the app settings from a local.settings.json (default: the environment)",
)
@click.pass_context
def cli(context: click.Context, settings: Path | None) -> None:
    """Operate the Defender for IoT → ServiceNow app: its status at a glance, rules, the alerts and poison
    queues, ServiceNow sign-in, the device sync, the write-back to Defender, and the relay next to a locally
    managed sensor."""
    if settings is not None:
        load_local_settings(settings)
    context.obj = Operator()


for command in (status, enqueue, rules, poison, connect_command, sync, relay, writeback, verify):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (0 done, 1 failed, 2 usage or settings, 130 interrupted)."""
    try:
        result = cli.main(args=argv, prog_name=PROGRAM, standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("interrupted", err=True)
        return 130
    except SettingsError as exc:
        click.echo(str(exc), err=True)
        return 2
    except AzureError as exc:
        click.echo(storage_problem(exc), err=True)
        return 1
    return result if isinstance(result, int) else 0
