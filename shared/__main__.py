"""Operator commands: ``python -m shared <command>`` (with the app settings in the environment, or
``--settings local.settings.json``).

  enqueue [FILE|-] --sensor NAME   validate and queue Defender alerts (an /api/v1/alerts list or envelopes)
  rules validate FILE              check a rules document (JSON or YAML); every error is listed
  rules apply FILE                 stamp creation times and store it where the forwarder reads it
  rules list                       the rules in force
  rules dry-run ALERT_FILE         which rules and actions an alert would trigger, and the record
  connect NAME [--username U]      sign a connection in: the password is used once and never stored
  sync run | status                run the device sync now; show the last sync
  poison list                      what is in the poison queue, and why
  poison replay [--all | ID ...]   put poison messages back on the alerts queue
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import getpass
import json
import os
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from shared.alerts import DELIVERY_FIELD, InvalidMessageError, parse_message
from shared.enqueue import alert_envelope, alerts_from_api, enqueue_alerts
from shared.incidents import record_values
from shared.rules import RulesError, evaluate, load_document, parse_rules, stamp
from shared.secrets import Secret, SecretStoreUnavailableError
from shared.servicenow import ServiceNowError
from shared.settings import Settings, SettingsError, load_settings
from shared.storage import blob_service, queue_service
from shared.tokens import TokenError, connect


def read_document(text: str, where: str) -> Any:
    try:
        return load_document(text, where)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


def _rules_location(settings: Settings) -> tuple[str, str | None]:
    location = settings.forwarding.rules_location
    if location.startswith(("file:", "/")):
        return location.removeprefix("file:"), None
    container, _, name = location.partition("/")
    return container, name


def stored_rules(settings: Settings) -> dict[str, Any] | None:
    first, name = _rules_location(settings)
    try:
        if name is None:
            return read_document(Path(first).read_text(), first)  # type: ignore[no-any-return]
        data = blob_service(settings.alerts_storage).get_blob_client(first, name).download_blob().readall()
        return read_document(data.decode(), settings.forwarding.rules_location)  # type: ignore[no-any-return]
    except (FileNotFoundError, ResourceNotFoundError):
        return None


def store_rules(settings: Settings, document: dict[str, Any]) -> str:
    text = json.dumps(document, indent=2) + "\n"
    first, name = _rules_location(settings)
    if name is None:
        Path(first).write_text(text)
        return first
    container = blob_service(settings.alerts_storage).get_container_client(first)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    container.upload_blob(name, text.encode(), overwrite=True)
    return settings.forwarding.rules_location


def cmd_enqueue(settings: Settings, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file in (None, "-") else Path(args.file).read_text()
    sensor = {
        k: v
        for k, v in {
            "name": args.sensor,
            "id": args.sensor_id,
            "site": args.site,
            "zone": args.zone,
            "url": args.sensor_url,
        }.items()
        if v
    }
    try:
        alerts = alerts_from_api(read_document(text, args.file or "stdin"))
        documents = [a if "schema" in a else alert_envelope(a, sensor, args.protocol) for a in alerts]
        queue = queue_service(settings.alerts_storage).get_queue_client(settings.alerts_queue)
        ids = enqueue_alerts(queue, documents)
    except InvalidMessageError as exc:
        print(f"nothing queued: {exc.reason}", file=sys.stderr)
        return 1
    print(f"queued {len(ids)} message(s) on '{settings.alerts_queue}'")
    return 0


def cmd_rules(settings: Settings, args: argparse.Namespace) -> int:
    connections = [c.name for c in settings.connections]
    if args.rules_command in ("validate", "apply"):
        document = read_document(Path(args.file).read_text(), args.file)
        now = datetime.now(UTC)
        stamped = stamp(document, stored_rules(settings), now) if isinstance(document, dict) else document
        try:
            parsed = parse_rules(stamped, connections)
        except RulesError as exc:
            print(f"{args.file}: {len(exc.errors)} error(s)", file=sys.stderr)
            for error in exc.errors:
                print(f"  - {error}", file=sys.stderr)
            return 1
        if args.rules_command == "validate":
            print(f"{args.file}: valid ({len(parsed.rules)} rules, {len(parsed.actions)} actions)")
            return 0
        where = store_rules(settings, stamped)
        print(f"applied {len(parsed.rules)} rules to {where}")
        return 0
    document = stored_rules(settings)
    if document is None:
        print(f"no rules at {settings.forwarding.rules_location}", file=sys.stderr)
        return 1
    rules = parse_rules(document, connections)
    if args.rules_command == "list":
        for rule in rules.rules:
            print(
                f"{rule.name}: {'enabled' if rule.enabled else 'disabled'}, severity ≥ {rule.minimal_severity.label}, "
                f"created {rule.created_at.isoformat()}, actions {', '.join(rule.actions)}"
            )
        return 0
    try:
        message = parse_message(Path(args.alert).read_bytes())
    except InvalidMessageError as exc:
        print(f"{args.alert}: invalid message: {exc.reason}", file=sys.stderr)
        return 1
    decision = evaluate(rules, message)
    print(f"rules matched: {', '.join(decision.rules) or 'none'}")
    for name, reason in decision.skipped.items():
        print(f"  skipped {name}: {reason}")
    for action in decision.actions:
        print(f"action {action.name} → {action.report} in {action.table} on connection {action.connection}:")
        print(json.dumps(record_values(message, action), indent=2))
    return 0


def cmd_connect(settings: Settings, args: argparse.Namespace) -> int:
    try:
        connection = settings.connection(args.name)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    if connection.auth not in ("oauth", "client_credentials"):
        print(
            f"connection '{connection.name}' uses auth '{connection.auth}'; connect is for oauth and "
            "client_credentials connections",
            file=sys.stderr,
        )
        return 2
    username = args.username or connection.username or ""
    password = Secret("")
    if connection.auth == "oauth":
        if args.password_stdin or not sys.stdin.isatty():
            password = Secret(sys.stdin.readline().rstrip("\r\n"))
        else:
            password = Secret(getpass.getpass(f"ServiceNow password for {username} (used once, not stored): "))
    try:
        report = connect(connection, settings, username, password)
    except (TokenError, ServiceNowError, SecretStoreUnavailableError) as exc:
        print(f"connect failed: {exc}", file=sys.stderr)
        return 1
    finally:
        del password
    print(f"connection '{connection.name}' signed in; tokens stored in Key Vault")
    print(f"  access-token lifespan: {report.access_lifespan_seconds} s")
    if report.refresh_expires_on is not None:
        print(
            f"  refresh token valid until {report.refresh_expires_on:%Y-%m-%d %H:%M} UTC "
            f"({connection.refresh_token_lifespan_days:g} days, from the connection's refresh_token_lifespan_days)"
        )
    for warning in report.warnings:
        print(f"  warning: {warning}", file=sys.stderr)
    return 0


def cmd_sync(settings: Settings, args: argparse.Namespace) -> int:
    from shared.inventory import build_sync  # noqa: PLC0415 - only this command needs the console client

    if not settings.device_sync.console_url:
        print("CONSOLE_URL is not set; the device sync needs the management console", file=sys.stderr)
        return 2
    sync = build_sync(settings)
    if args.sync_command == "run":
        status = sync.run()
    else:
        sync.state.ensure()
        last = sync.state.last_sync()
        if last is None:
            print("no device sync has run yet")
            return 0
        status = last
    result = f"failed: {status.error}" if status.error else "succeeded"
    print(f"last device sync {result}")
    print(
        f"  started {status.started}, finished {status.finished} ({status.duration_seconds:.1f} s, "
        f"{status.servicenow_calls} ServiceNow calls)"
    )
    print("  " + ", ".join(f"{name} {value}" for name, value in asdict(status.counts).items()))
    print(f"  enabled {settings.device_sync.enabled}, every {settings.device_sync.frequency_minutes} minutes")
    return 1 if status.error else 0


def cmd_poison(settings: Settings, args: argparse.Namespace) -> int:
    service = queue_service(settings.alerts_storage)
    poison = service.get_queue_client(f"{settings.alerts_queue}-poison")
    try:
        messages = list(poison.receive_messages(max_messages=32, visibility_timeout=30))
    except ResourceNotFoundError:
        messages = []
    if args.poison_command == "list":
        for message in messages:
            poison.update_message(message, visibility_timeout=0)
            document = _poison_document(message.content)
            print(
                f"{message.id}  {message.inserted_on:%Y-%m-%d %H:%M:%S}  {document.get('reason', 'failed in the host')}"
            )
        print(f"{len(messages)} message(s) in '{poison.queue_name}'")
        return 0
    queue = service.get_queue_client(settings.alerts_queue)
    replayed = 0
    for message in messages:
        if not args.all and message.id not in args.ids:
            poison.update_message(message, visibility_timeout=0)
            continue
        document = _poison_document(message.content)
        original = document.get("message")
        if isinstance(original, dict):
            original = {k: v for k, v in original.items() if k != DELIVERY_FIELD}  # a fresh start, a fresh age
            queue.send_message(base64.b64encode(json.dumps(original).encode()).decode())
        else:
            queue.send_message(document.get("message_base64") or message.content)
        poison.delete_message(message)
        replayed += 1
    print(f"replayed {replayed} message(s) onto '{settings.alerts_queue}'")
    return 0


def _poison_document(content: str) -> dict[str, Any]:
    """Our wrapped poison messages, or the host's raw copies (after maxDequeueCount)."""
    try:
        document = json.loads(base64.b64decode(content))
    except ValueError:
        return {"message_base64": content}
    if isinstance(document, dict) and "reason" in document:
        return document
    return {"message_base64": content, "reason": "failed in the host (maxDequeueCount reached)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shared", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settings", type=Path, help="read app settings from a local.settings.json")
    commands = parser.add_subparsers(dest="command", required=True)
    enqueue = commands.add_parser("enqueue", help="validate and queue alerts")
    enqueue.add_argument("file", nargs="?", help="Defender API alert list or envelopes (JSON); '-' or none: stdin")
    enqueue.add_argument("--sensor", required=True, help="sensor name")
    enqueue.add_argument("--sensor-id")
    enqueue.add_argument("--site")
    enqueue.add_argument("--zone")
    enqueue.add_argument("--sensor-url")
    enqueue.add_argument("--protocol", help="the protocol, when the sender knows it")
    rules = commands.add_parser("rules", help="forwarding rules").add_subparsers(dest="rules_command", required=True)
    rules.add_parser("validate").add_argument("file")
    rules.add_parser("apply").add_argument("file")
    rules.add_parser("list")
    rules.add_parser("dry-run").add_argument("alert", help="a message (envelope) file")
    connect_parser = commands.add_parser("connect", help="sign an OAuth connection in (tokens to Key Vault)")
    connect_parser.add_argument("name", help="the connection's name in SERVICENOW_CONNECTIONS")
    connect_parser.add_argument("--username", help="default: the connection's username")
    connect_parser.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    sync = commands.add_parser("sync", help="the device sync").add_subparsers(dest="sync_command", required=True)
    sync.add_parser("run", help="run the device sync now")
    sync.add_parser("status", help="the last device sync")
    poison = commands.add_parser("poison", help="the poison queue").add_subparsers(dest="poison_command", required=True)
    poison.add_parser("list")
    replay = poison.add_parser("replay")
    replay.add_argument("ids", nargs="*")
    replay.add_argument("--all", action="store_true")
    args = parser.parse_args(argv)
    if args.settings:
        values = json.loads(args.settings.read_text()).get("Values", {})
        os.environ.update({k: str(v) for k, v in values.items()})
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    handler = {
        "enqueue": cmd_enqueue,
        "rules": cmd_rules,
        "poison": cmd_poison,
        "connect": cmd_connect,
        "sync": cmd_sync,
    }[args.command]
    return handler(settings, args)


if __name__ == "__main__":
    sys.exit(main())
