"""``sync``: run the device sync now, with its progress shown, or show the last one."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict

import click

from shared.app.devices import build_sync, sync_state
from shared.cli.context import Operator, pass_operator
from shared.devices.state import SyncStatus
from shared.devices.sync import SyncProgress

LINE_EVERY_SECONDS = 10.0


@click.group()
def sync() -> None:
    """The device sync: the Defender inventory into the ServiceNow CMDB."""


def _progress_text(progress: SyncProgress) -> str:
    return (
        f"{progress.stream}: {progress.pages} page(s), {progress.items:,} item(s) read; "
        f"{progress.servicenow_calls:,} ServiceNow call(s) so far"
    )


@contextmanager
def _progress() -> Iterator[Callable[[SyncProgress], None]]:
    """A live line on a terminal; elsewhere (a log, a pipe) a line when a stream starts and every 10 s."""
    if sys.stdout.isatty():
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: PLC0415 - terminal only

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True) as bar:
            task = bar.add_task("starting", total=None)
            yield lambda progress: bar.update(task, description=_progress_text(progress))
        return
    last: dict[str, float] = {}

    def line(progress: SyncProgress) -> None:
        now = time.monotonic()
        if progress.stream not in last or now - last[progress.stream] >= LINE_EVERY_SECONDS:
            last[progress.stream] = now
            click.echo(_progress_text(progress))

    yield line


def _report(status: SyncStatus, operator: Operator) -> int:
    result = f"failed: {status.error}" if status.error else "succeeded"
    click.echo(f"last device sync {result}")
    click.echo(
        f"  started {status.started}, finished {status.finished} ({status.duration_seconds:.1f} s, "
        f"{status.servicenow_calls} ServiceNow calls)"
    )
    click.echo("  " + ", ".join(f"{name} {value}" for name, value in asdict(status.counts).items()))
    settings = operator.settings.device_sync
    click.echo(f"  enabled {settings.enabled}, every {settings.frequency_minutes} minutes")
    return 1 if status.error else 0


def _needs_console(operator: Operator) -> None:
    if not operator.settings.device_sync.console_url:
        raise click.UsageError("CONSOLE_URL is not set; the device sync needs the management console")


@sync.command()
@pass_operator
def run(operator: Operator) -> int:
    """Run the device sync now, whatever its schedule."""
    _needs_console(operator)
    with _progress() as show:
        status = build_sync(operator.settings, progress=show).run()
    return _report(status, operator)


@sync.command()
@pass_operator
def status(operator: Operator) -> int:
    """The last device sync: when, how long, what it wrote, and its error if it failed."""
    _needs_console(operator)
    state = sync_state(operator.settings)
    state.ensure()
    last = state.last_sync()
    if last is None:
        click.echo("no device sync has run yet")
        return 0
    return _report(last, operator)
