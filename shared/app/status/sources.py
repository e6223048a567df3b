"""Each Defender source's lines: its intake (last cycle, lag, sensors offline), device sync and write-back, from
the state rows those timers keep."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableServiceClient

from shared.alerting.intake import IntakeState, last_cycle, sensor_health
from shared.alerting.writeback import SN_TIME, WritebackState
from shared.app.devices import sync_state
from shared.app.status.findings import Figure, Finding, Level, duration, interval_of, lateness, minutes, stamp
from shared.app.writeback import write_back_tables
from shared.settings import Settings

# The intake's watermark (the newest alert start seen) lagging more than twice its reach-back: a source that
# stopped reporting new alerts — or a quiet one, hence WARN only.
INTAKE_LAG_FACTOR = 2
# A device sync older than twice its frequency: alerts.bicep's 'devicesync' rule (no success in twice it).
SYNC_LATE_FACTOR = 2
# Any sensor whose last known health is offline: the intake has sent its system message; a person looks.
OFFLINE_NAMED = 5  # the line names this many; --json lists up to OFFLINE_LISTED
OFFLINE_LISTED = 50


def source_findings(settings: Settings, tables: TableServiceClient, now: datetime) -> Iterator[Finding]:
    state = IntakeState(tables.get_table_client(settings.intake.state_table))
    interval = interval_of(settings.intake_schedule, now)
    overlap = timedelta(minutes=settings.intake.overlap_minutes)
    for source in settings.intake.sources:
        cycle = last_cycle(state, source.name)
        watermark = state.watermark(source.name)
        lag = now - watermark if watermark else None
        figures: dict[str, Figure] = {
            "last_cycle": cycle.at.isoformat() if cycle else None,
            "queued": sum(cycle.queued.values()) if cycle else None,
            "skipped": cycle.skipped if cycle else None,
            "first_skipped": cycle.first_skipped if cycle else None,
            "error": cycle.error if cycle else None,
            "lag_minutes": minutes(lag) if lag is not None else None,
        }
        level, threshold = lateness(now - cycle.at, interval, "ALERT_INTAKE_SCHEDULE") if cycle else (Level.WARN, "")
        threshold += (
            f"; WARN lag > {INTAKE_LAG_FACTOR}× ALERT_INTAKE_OVERLAP_MINUTES "
            f"({duration(INTAKE_LAG_FACTOR * overlap)}); WARN any skipped or a sensor offline; FAIL an error"
        )
        if cycle is None:
            parts = ["no intake cycle recorded yet"]
        elif cycle.error:
            parts = [f"last cycle {duration(now - cycle.at)} ago failed: {cycle.error}"]
            level = Level.FAIL
        else:
            queued = ", ".join(f"{count} {kind}" for kind, count in cycle.queued.items())
            parts = [f"last cycle {duration(now - cycle.at)} ago queued {queued}"]
            if cycle.skipped:
                parts.append(f"skipped {cycle.skipped}, the first: {cycle.first_skipped}")
                level = max(level, Level.WARN)
        if lag is None:
            parts.append("no alert seen yet (no watermark)")
        else:
            parts.append(f"lag {duration(lag)} (newest alert start seen {stamp(now - lag)})")
            if lag > INTAKE_LAG_FACTOR * overlap:
                level = max(level, Level.WARN)
        try:
            health = sensor_health(state, source.name)
        except ResourceNotFoundError:  # no intake cycle has made its table yet
            health = {}
        offline = sorted(name for name, online in health.items() if not online)
        figures.update(sensors=len(health), sensors_offline=len(offline), offline_sensors=offline[:OFFLINE_LISTED])
        more = f" (+{len(offline) - OFFLINE_NAMED} more)" if len(offline) > OFFLINE_NAMED else ""
        named = f": {', '.join(offline[:OFFLINE_NAMED])}{more}" if offline else ""
        parts.append(f"{len(offline)} of {len(health)} sensor(s) offline{named}")
        if offline:
            level = max(level, Level.WARN)
        yield Finding("source", f"{source.name} ({source.kind})", level, "; ".join(parts), threshold, figures)


def sync_findings(settings: Settings, tables: TableServiceClient, now: datetime) -> Iterator[Finding]:
    sync = settings.device_sync
    if not sync.enabled:
        yield Finding("device sync", "all", Level.OK, "disabled (DEVICE_SYNC_ENABLED)", "—")
        return
    late = timedelta(minutes=SYNC_LATE_FACTOR * sync.frequency_minutes)
    threshold = (
        f"FAIL older than {SYNC_LATE_FACTOR}× DEVICE_SYNC_FREQUENCY_MINUTES ({duration(late)}) or an error; "
        "WARN item errors"
    )
    for source in sync.sources:
        last = sync_state(settings, source, tables).last_sync()
        subject = f"{source.name} ({source.kind})"
        if last is None:
            yield Finding(
                "device sync", subject, Level.WARN, "no device sync has run yet", threshold, {"last_run": None}
            )
            continue
        ended = datetime.fromisoformat(last.finished or last.started)
        age = now - ended
        counts = last.counts
        figures: dict[str, Figure] = {
            "last_run": ended.isoformat(),
            "age_minutes": minutes(age),
            "created": counts.created,
            "updated": counts.updated,
            "unchanged": counts.unchanged,
            "retired": counts.retired,
            "errors": counts.errors,
            "error": last.error or None,
        }
        written = (
            f"created {counts.created}, updated {counts.updated}, unchanged {counts.unchanged}, "
            f"retired {counts.retired}, errors {counts.errors}"
        )
        outcome = (
            f"failed: {last.error}"
            if last.error
            else f"stopped at its deadline in {last.stopped}"
            if last.stopped
            else "succeeded"
        )
        level = Level.FAIL if last.error or age > late else Level.WARN if counts.errors else Level.OK
        summary = f"last run {duration(age)} ago {outcome}; {written}"
        yield Finding("device sync", subject, level, summary, threshold, figures)


def writeback_findings(settings: Settings, tables: TableServiceClient, now: datetime) -> Iterator[Finding]:
    state = WritebackState(tables.get_table_client(settings.intake.state_table))
    interval = interval_of(settings.intake_schedule, now)  # the write-back runs after each intake cycle
    for connection, table in write_back_tables(settings):
        subject = f"{connection}/{table}"
        last = state.last(connection, table)
        if last is None:
            yield Finding(
                "write-back",
                subject,
                Level.WARN,
                "no write-back cycle has run yet",
                "WARN none yet",
                {"last_cycle": None},
            )
            continue
        started = datetime.fromisoformat(last.started)
        level, threshold = lateness(now - started, interval, "ALERT_INTAKE_SCHEDULE")
        parts = [
            f"last cycle {duration(now - started)} ago: {last.records} resolved record(s), "
            f"{last.written} closed at their source"
        ]
        if last.failed:
            parts.append(f"{len(last.failed)} failed, the first: {last.failed[0]}")
            level = Level.FAIL
        if last.refused:
            parts.append(f"{len(last.refused)} refused, the first: {last.refused[0]}")
            level = max(level, Level.WARN)
        lag = None
        if last.watermark:
            lag = now - datetime.strptime(last.watermark, SN_TIME).replace(tzinfo=UTC)
            parts.append(f"lag {duration(lag)} (newest resolved record dealt with: {last.watermark} UTC)")
        figures: dict[str, Figure] = {
            "last_cycle": started.isoformat(),
            "records": last.records,
            "written": last.written,
            "failed": len(last.failed),
            "refused": len(last.refused),
            "lag_minutes": minutes(lag) if lag is not None else None,
        }
        yield Finding(
            "write-back", subject, level, "; ".join(parts), threshold + "; WARN refused; FAIL failed", figures
        )
