"""``rules``: check a forwarding rules document, apply it, list the rules in force, try a message on them."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

import click

from shared.alerting.assets import Lookup, asset_fields
from shared.alerting.groups import group_value
from shared.alerting.records import fields_for, prepare, record_values
from shared.alerting.rules import RulesError, RuleSet, describe, evaluate, load_document, parse_rules, stamp
from shared.alerting.rules_store import read_rules, write_rules
from shared.app.forwarding import asset_lookup
from shared.assets.model import Asset
from shared.cli.context import CommandError, Operator, pass_operator, read_input
from shared.contract.fields import InvalidMessageError
from shared.contract.model import AlertMessage
from shared.contract.parse import parse_message
from shared.platform.settings import SettingsError
from shared.servicenow.records import record_link
from shared.settings import load_settings


@click.group()
def rules() -> None:
    """Forwarding rules: which alerts become which ServiceNow records."""


def _document(path: str) -> Any:
    try:
        return load_document(read_input(path, "a rules document, JSON or YAML"), path)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _parsed(document: Any, where: str, connections: list[str] | None) -> RuleSet:
    try:
        return parse_rules(document, connections)
    except RulesError as exc:
        lines = [f"{where}: {len(exc.errors)} error(s)", *(f"  - {error}" for error in exc.errors)]
        raise CommandError("\n".join(lines)) from None


def _stored(operator: Operator) -> Any:
    location = operator.settings.forwarding.rules_location
    try:
        return read_rules(location, operator.blobs())
    except ValueError as exc:
        raise CommandError(f"the applied rules are unreadable: {exc}") from None


@rules.command()
@click.argument("file")
def validate(file: str) -> int:
    """Check a rules document offline: every error is listed. No settings or storage are needed; with
    the app settings at hand (--settings or the environment), action connections are checked too."""
    document = _document(file)
    stamped = stamp(document, None, datetime.now(UTC)) if isinstance(document, dict) else document
    try:
        connections: list[str] | None = [c.name for c in load_settings().connections]
        note = ""
    except SettingsError:
        connections, note = None, " (connection names not checked: no app settings; give --settings to check them)"
    parsed = _parsed(stamped, file, connections)
    click.echo(f"{file}: valid ({len(parsed.rules)} rules, {len(parsed.actions)} actions){note}")
    return 0


@rules.command()
@click.argument("file")
@click.option("--if-none", is_flag=True, help="only when no rules are applied yet (a starter file, say)")
@pass_operator
def apply(operator: Operator, file: str, if_none: bool) -> int:
    """Stamp each rule's creation time (kept for rules already applied) and store the document where the
    forwarder reads it. A rule acts only on alerts raised after it was created."""
    document = _document(file)
    settings = operator.settings
    if if_none and _stored(operator) is not None:
        click.echo(f"rules are applied already at {settings.forwarding.rules_location}; left as they are")
        return 0
    stamped = stamp(document, _stored(operator), datetime.now(UTC)) if isinstance(document, dict) else document
    parsed = _parsed(stamped, file, [c.name for c in settings.connections])
    where = write_rules(settings.forwarding.rules_location, operator.blobs(), stamped)
    in_force = _takes_effect(settings.forwarding.rules_check_seconds)
    click.echo(f"applied {len(parsed.rules)} rules to {where}; {in_force}")
    return 0


def _takes_effect(check_seconds: float) -> str:
    """When the forwarder judges alerts by the new document: it looks for one at most this often, so an alert
    forwarded sooner may still meet the previous rules."""
    if check_seconds == 0:
        return "in force from the next alert (FORWARDING_RULES_CHECK_SECONDS=0: looked for on every alert)"
    return (
        f"in force within {check_seconds:g} s (the forwarder looks for a new document every "
        f"FORWARDING_RULES_CHECK_SECONDS={check_seconds:g}; alerts forwarded before then meet the previous rules)"
    )


def _in_force(operator: Operator) -> RuleSet:
    document = _stored(operator)
    if document is None:
        raise CommandError(f"no rules at {operator.settings.forwarding.rules_location}; `rules apply FILE` stores them")
    return _parsed(
        document, str(operator.settings.forwarding.rules_location), [c.name for c in operator.settings.connections]
    )


@rules.command(name="list")
@pass_operator
def list_rules(operator: Operator) -> int:
    """The rules in force, each with every condition it has."""
    for rule in _in_force(operator).rules:
        click.echo(describe(rule))
    return 0


@rules.command(name="dry-run")
@click.argument("message_file")
@pass_operator
def dry_run(operator: Operator, message_file: str) -> int:
    """Which rules and actions a message (an envelope, as on the queue) triggers, why the others do not,
    and the record each action would write."""
    ruleset = _in_force(operator)
    try:
        message = parse_message(read_input(message_file, "one alert message envelope, JSON"))
    except InvalidMessageError as exc:
        raise CommandError(f"{message_file}: invalid message: {exc.reason}") from None
    decision = evaluate(ruleset, message)
    click.echo(f"rules matched: {', '.join(decision.rules) or 'none'}")
    for name, reason in decision.skipped.items():
        click.echo(f"  skipped {name}: {reason}")
    lookup = _lookup(operator, message) if any(a.group is None for a in decision.actions) else None
    alert = prepare(message)
    for action in decision.actions:
        click.echo(f"action {action.name} → {action.report} in {action.table} on connection {action.connection}:")
        if action.group is not None:
            value = group_value(alert, action.group)
            click.echo(
                f"  group: key {action.group.key} = {value!r}, window {action.group.window_minutes:g} min; the first "
                "alert of the group writes the record, later ones are listed in its work notes"
            )
            click.echo(json.dumps(record_values(message, action), indent=2))
            continue
        assets = None
        if lookup is not None:
            link = functools.partial(_link, operator.settings.connection(action.connection).instance_url)
            assets = asset_fields(lookup, action, alert.values["details"], link, count=False)
            shown = ", ".join(f"{{{k}}} = {assets.values[k]!r}" for k in ASSET_SHOWN)
            click.echo(f"  assets ({action.configuration_item}'s CI): {shown}")
        click.echo(json.dumps(fields_for(alert, action, 0, assets), indent=2))
    return 0


ASSET_SHOWN = ("ci", "ci_class", "purdue_level", "criticality", "cves")  # {assets} is the description's section


def _link(instance_url: str, asset: Asset) -> str:
    return f"CI: {record_link(instance_url, asset.ci_class, asset.sys_id)}"


def _lookup(operator: Operator, message: AlertMessage) -> Lookup | None:
    """The message's devices in the asset index, as the forwarder would find them now."""
    assets = asset_lookup(operator.settings)
    if assets is None:
        click.echo("assets: the device sync is off (DEVICE_SYNC_ENABLED), so records name no CI")
        return None
    found = assets.find(message)
    if found is None:
        click.echo("assets: the message names no device (no device id, no address)")
    return found
