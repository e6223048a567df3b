"""``sync``: run the device sync now, with its progress shown, or show the last one."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from types import FrameType

import click

from shared.app.devices import build_sync, source_named, sync_state
from shared.cli.context import Operator, pass_operator
from shared.defender.settings import SourceSettings
from shared.devices.state import SyncStatus
from shared.devices.sync import DeviceSync, SyncProgress

LINE_EVERY_SECONDS = 10.0


@click.group()
def sync() -> None:
    """The device sync: the Defender inventory into the ServiceNow CMDB."""


def _progress_text(progress: SyncProgress) -> str:
    return (
        f"{progress.stream}: {progress.pages} page(s), {progress.items:,} item(s) read; "
        f"{progress.servicenow_calls:,} ServiceNow call(s) so far, {progress.in_flight} write(s) in flight"
    )


@contextmanager
def _stop_on_interrupt(sync: DeviceSync) -> Iterator[None]:
    """The first Ctrl-C stops the sync cleanly: no new write is sent, the ones in flight finish and are saved,
    and the next run resumes there. A second one interrupts at once (what is saved is still consistent)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        if sync.stop_requested.is_set():
            raise KeyboardInterrupt
        sync.stop_requested.set()
        click.echo("stopping: the writes in flight finish and are saved; Ctrl-C again to interrupt now", err=True)

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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


def _report(status: SyncStatus, source: SourceSettings) -> int:
    result = (
        f"failed: {status.error}"
        if status.error
        else f"stopped in {status.stopped} (its deadline or Ctrl-C; the next run resumes there)"
        if status.stopped
        else "succeeded"
    )
    click.echo(f"source '{source.name}' ({source.kind}): last device sync {result}")
    click.echo(
        f"  started {status.started}, finished {status.finished} ({status.duration_seconds:.1f} s, "
        f"{status.servicenow_calls} ServiceNow calls)"
    )
    click.echo("  " + ", ".join(f"{name} {value}" for name, value in asdict(status.counts).items()))
    for note in status.notes:
        click.echo(f"  note: {note}")
    return 1 if status.error else 0


def _sources(operator: Operator, name: str | None) -> list[SourceSettings]:
    try:
        sources = source_named(operator.settings, name)
    except KeyError as exc:
        raise click.UsageError(str(exc.args[0])) from None
    if not sources:
        raise click.UsageError(
            "no source reads devices: set DEFENDER_SOURCES (a cloud, sensor or console source) or CONSOLE_URL"
        )
    return sources


SOURCE_OPTION = click.option("--source", "source_name", metavar="NAME", help="Only this source (default: every one).")


@sync.command()
@SOURCE_OPTION
@pass_operator
def run(operator: Operator, source_name: str | None) -> int:
    """Run the device sync now, whatever its schedule. Ctrl-C stops it cleanly (the next run resumes)."""
    worst = 0
    for source in _sources(operator, source_name):
        with _progress() as show:
            device_sync = build_sync(operator.settings, source, progress=show)
            with _stop_on_interrupt(device_sync):
                status = device_sync.run()
        worst = max(worst, _report(status, source))
        if device_sync.stop_requested.is_set():
            break  # the operator asked to stop: not the next source either
    return worst


@sync.command()
@SOURCE_OPTION
@pass_operator
def status(operator: Operator, source_name: str | None) -> int:
    """Each source's last device sync: when, how long, what it wrote, what the source cannot provide, and
    its error if it failed."""
    worst = 0
    settings = operator.settings.device_sync
    click.echo(f"device sync enabled {settings.enabled}, every {settings.frequency_minutes} minutes")
    for source in _sources(operator, source_name):
        state = sync_state(operator.settings, source)
        state.ensure()
        last = state.last_sync()
        if last is None:
            click.echo(f"source '{source.name}' ({source.kind}): no device sync has run yet")
            continue
        worst = max(worst, _report(last, source))
    return worst
