"""``writeback``: the loop's other half — records resolved in ServiceNow closing their alerts at the source."""

from __future__ import annotations

import click

from shared.alerting.writeback import WritebackResult
from shared.app.writeback import run_writeback, write_back_tables, writeback_state
from shared.cli.context import Operator, pass_operator

CONSOLE_NOTE = (
    "note: source '{name}' (console): the console's alert action takes a UUID that its documented alert lists "
    "do not carry; the app sends <sensorId>-<time>, the form of Microsoft's one example, which only a real "
    "console can confirm. A console that refuses it answers 500 'no alert was found for this UUID', and the "
    "record shows below as refused: handle that alert on the console."
)


@click.group()
def writeback() -> None:
    """Closing alerts at their source when their records are resolved in ServiceNow."""


def _show(result: WritebackResult) -> None:
    click.echo(f"{result.connection}/{result.table}: last cycle {result.started}")
    click.echo(f"  {result.records} resolved record(s) read; {result.written} alert(s) closed at their source")
    for reason, count in sorted(result.skipped.items()):
        click.echo(f"  skipped {count}: {reason}")
    for failure in result.failed:
        click.echo(f"  failed (tried again next cycle): {failure}")
    for refusal in result.refused:
        click.echo(f"  refused (recorded, not tried again): {refusal}")
    if result.repeated:
        click.echo(
            f"  finished after a stop between the close and its record: {result.repeated} "
            "(found closed at the source, or closed again where the source cannot say)"
        )
    if result.stopped:
        click.echo("  stopped at its deadline; the next cycle carries on from the watermark")
    if result.watermark:
        click.echo(f"  reads from records updated at or after {result.watermark} (ServiceNow time, UTC)")


@writeback.command()
@pass_operator
def status(operator: Operator) -> int:
    """The last write-back cycle of each connection and table: written back, skipped (why), failed (why)."""
    settings = operator.settings
    tables = write_back_tables(settings)
    if not tables:
        click.echo("write-back: no action writes back (or no DEFENDER_SOURCES): nothing to show")
        return 0
    for source in settings.intake.sources:
        if source.kind == "console":
            click.echo(CONSOLE_NOTE.format(name=source.name))
    state = writeback_state(settings)
    worst = 0
    for connection, table in tables:
        last = state.last(connection, table)
        if last is None:
            click.echo(f"{connection}/{table}: no write-back cycle has run yet")
            continue
        _show(last)
        worst = max(worst, 1 if last.failed else 0)
    return worst


@writeback.command()
@pass_operator
def run(operator: Operator) -> int:
    """Run one write-back cycle now, whatever the schedule."""
    try:
        results = run_writeback(operator.settings)
    except RuntimeError as exc:
        click.echo(str(exc), err=True)
        state = writeback_state(operator.settings)
        for connection, table in write_back_tables(operator.settings):
            if (last := state.last(connection, table)) is not None:
                _show(last)
        return 1
    for result in results:
        _show(result)
    if not results:
        click.echo("write-back: nothing to do (no action writes back, or no DEFENDER_SOURCES)")
    return 0
