"""``status``: the app's health on one screen (shared.app.status gathers it); exit code 1 when anything is FAIL."""

from __future__ import annotations

import json
import sys

import click
from azure.core.exceptions import AzureError

from shared.app.status import Finding, Level, Status, gather_status
from shared.cli.context import QUICK_STORAGE, CommandError, Operator, pass_operator, storage_problem

COLOURS = {Level.OK: "green", Level.WARN: "yellow", Level.FAIL: "red"}


class StorageUnreachableError(CommandError):
    """Nothing to show without the storage account: one line, exit code 2."""

    exit_code = 2


def _verdict(status: Status) -> str:
    counts = {level: sum(f.level is level for f in status.findings) for level in Level}
    if status.worst is Level.OK:
        return f"status: everything OK ({counts[Level.OK]} line(s))"
    return f"status: {counts[Level.FAIL]} FAIL, {counts[Level.WARN]} WARN, {counts[Level.OK]} OK"


def plain_lines(status: Status) -> list[str]:
    """The status as plain text (a log, a pipe, the demo): a line per finding, then the verdict."""
    return [*(_plain(f) for f in status.findings), _verdict(status)]


def _plain(finding: Finding) -> str:
    return f"{finding.level.name:<4} {finding.area} {finding.subject}: {finding.summary} [{finding.threshold}]"


def _rich(status: Status) -> None:
    from rich.console import Console  # noqa: PLC0415 - terminal only
    from rich.markup import escape  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"status at {status.at:%Y-%m-%d %H:%M:%S} UTC", show_lines=False, expand=True)
    for column in ("", "what", "figures", "threshold"):
        table.add_column(column, overflow="fold")
    for finding in status.findings:
        colour = COLOURS[finding.level]
        table.add_row(
            f"[{colour}]{finding.level.name}[/]",
            escape(f"{finding.area} {finding.subject}"),  # reasons quote settings such as rules[0]: not markup
            escape(finding.summary),
            f"[dim]{escape(finding.threshold)}[/]",
        )
    console = Console(highlight=False)
    console.print(table)
    console.print(f"[{COLOURS[status.worst]}]{_verdict(status)}[/]")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
@click.option("--check-servicenow", is_flag=True, help="Also sign in to each ServiceNow connection and read one row.")
@pass_operator
def status(operator: Operator, as_json: bool, check_servicenow: bool) -> int:
    """The app's health at a glance: the alerts and poison queues and the last hour's deferrals, the last
    hour's records and the ServiceNow budget, the OAuth connections' tokens, each Defender source's intake
    (and sensors offline), device sync and write-back. Each line is OK,
    WARN or FAIL by the threshold it names (docs/operations.md). Reads only what the app keeps: no call to
    Defender, nor to ServiceNow unless --check-servicenow. Exit code 1 when anything is FAIL, 2 when storage
    cannot be reached."""
    try:
        result = gather_status(operator.settings, QUICK_STORAGE, check_servicenow=check_servicenow)
    except AzureError as exc:
        raise StorageUnreachableError(storage_problem(exc)) from None
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2))
    elif sys.stdout.isatty():
        _rich(result)
    else:
        click.echo("\n".join(plain_lines(result)))
    return 1 if result.worst is Level.FAIL else 0
