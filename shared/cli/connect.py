"""``connect``: sign a ServiceNow OAuth connection in; the password is used once and never stored."""

from __future__ import annotations

import getpass
import sys

import click

from shared.app.tokens import connect_connection
from shared.cli.context import CommandError, Operator, pass_operator
from shared.http.errors import HttpError
from shared.platform.secrets import Secret, SecretStoreUnavailableError
from shared.servicenow.oauth import TokenError


@click.command(name="connect")
@click.argument("name")
@click.option("--username", help="default: the connection's username")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input, not a prompt")
@pass_operator
def connect_command(operator: Operator, name: str, username: str | None, password_stdin: bool) -> int:
    """Sign connection NAME (from SERVICENOW_CONNECTIONS) in: the password grant once, the refresh and
    access tokens to Key Vault, one call to prove them."""
    settings = operator.settings
    try:
        connection = settings.connection(name)
    except KeyError as exc:
        raise click.UsageError(exc.args[0]) from None
    if connection.auth not in ("oauth", "client_credentials"):
        raise click.UsageError(
            f"connection '{connection.name}' uses auth '{connection.auth}'; connect is for oauth and "
            "client_credentials connections"
        )
    user = username or connection.username or ""
    password = Secret("")
    if connection.auth == "oauth":
        if password_stdin or not sys.stdin.isatty():
            password = Secret(sys.stdin.readline().rstrip("\r\n"))
        else:
            password = Secret(getpass.getpass(f"ServiceNow password for {user} (used once, not stored): "))
    try:
        report = connect_connection(settings, connection, user, password)
    except (TokenError, HttpError, SecretStoreUnavailableError) as exc:
        raise CommandError(f"connect failed: {exc}") from None
    finally:
        del password
    click.echo(f"connection '{connection.name}' signed in; tokens stored in Key Vault")
    click.echo(f"  access-token lifespan: {report.access_lifespan_seconds} s")
    if report.refresh_expires_on is not None:
        click.echo(
            f"  refresh token valid until {report.refresh_expires_on:%Y-%m-%d %H:%M} UTC "
            f"({connection.refresh_token_lifespan_days:g} days, from the connection's refresh_token_lifespan_days)"
        )
    for warning in report.warnings:
        click.echo(f"  warning: {warning}", err=True)
    return 0
