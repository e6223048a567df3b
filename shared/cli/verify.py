"""``verify``: check a deployment, local or in Azure, and send one test alert through it."""

from __future__ import annotations

import click

from shared.app.verify import run_checks
from shared.cli.context import Operator, pass_operator


@click.command()
@click.option("--timeout", type=click.FloatRange(5, 900), default=120.0, show_default=True,
              help="Seconds to wait for the test alert's record.")  # fmt: skip
@click.option("--no-alert", is_flag=True, help="Run the checks only; send no test alert.")
@pass_operator
def verify(operator: Operator, timeout: float, no_alert: bool) -> int:
    """Check storage, secrets, each ServiceNow connection (sign-in, tables, roles, data source) and each
    Defender source, one line each with its fix; then send a test alert raised now, wait for its record,
    show it and resolve it. Exit code 0 only when everything passed."""
    failed = 0
    for check in run_checks(operator.settings, timeout=timeout, end_to_end=not no_alert):
        click.echo(check.line())
        failed += not check.ok
    click.echo("verify: everything passed" if not failed else f"verify: {failed} check(s) failed")
    return 1 if failed else 0
