"""``enqueue``: validate Defender alerts and put them on the alerts queue, as a sensor-side sender does."""

from __future__ import annotations

import sys
import time

import click

from shared.alerting.enqueue import InvalidBatchError, alert_envelope, enqueue_alerts, parse_alerts
from shared.cli.context import CommandError, Operator, pass_operator, read_input
from shared.contract.fields import InvalidMessageError


@click.command()
@click.argument("file", required=False)
@click.option("--sensor", required=True, help="the sensor that raised the alerts (its name)")
@click.option("--sensor-id", help="the sensor's id")
@click.option("--site", help="the sensor's site")
@click.option("--zone", help="the sensor's zone")
@click.option("--sensor-url", help="the sensor's console URL, linked from the record")
@click.option("--protocol", help="the protocol, when the sender knows it")
@click.option(
    "--now",
    "stamp_now",
    is_flag=True,
    help="stamp each alert as raised now (a rule acts only on alerts raised after it was applied)",
)
@pass_operator
def enqueue(
    operator: Operator,
    file: str | None,
    sensor: str,
    sensor_id: str | None,
    site: str | None,
    zone: str | None,
    sensor_url: str | None,
    protocol: str | None,
    stamp_now: bool,
) -> int:
    """Validate alerts and queue them. FILE (or '-' for standard input) holds JSON: a Defender alert list
    as /api/v1/alerts returns it, one alert, or message envelopes. Nothing is queued when any message is
    invalid; every invalid one is listed."""
    if file is None or file == "-":
        if sys.stdin.isatty():
            if file is None:
                raise click.UsageError("give a file of alerts, or pipe them in with `enqueue - …`")
            click.echo("reading alerts (JSON) from standard input; end with Ctrl-D", err=True)
        data, where = sys.stdin.buffer.read(), "standard input"
    else:
        data, where = read_input(file, "Defender alerts, JSON"), file
    identity = {"name": sensor, "id": sensor_id, "site": site, "zone": zone, "url": sensor_url}
    try:
        alerts = parse_alerts(data, where)
        if stamp_now:
            moment = int(time.time() * 1000)
            alerts = [
                {**a, "alert": {**a["alert"], "time": moment}}
                if isinstance(a.get("alert"), dict)
                else {**a, "time": moment}
                for a in alerts
            ]
        documents = [
            a if "schema" in a else alert_envelope(a, {k: v for k, v in identity.items() if v}, protocol)
            for a in alerts
        ]
        queue = operator.queues().get_queue_client(operator.settings.alerts_queue)
        ids = enqueue_alerts(queue, documents)
    except InvalidBatchError as exc:
        lines = [f"nothing queued: {len(exc.problems)} of {len(documents)} message(s) invalid"]
        raise CommandError("\n".join([*lines, *(f"  - {problem}" for problem in exc.problems)])) from None
    except InvalidMessageError as exc:
        raise CommandError(f"nothing queued: {exc.reason}") from None
    click.echo(f"queued {len(ids)} message(s) on '{operator.settings.alerts_queue}'")
    return 0
