"""Forwarding rules documents: read (JSON or YAML), validated with every problem listed, and stamped.

The types are :mod:`shared.alerting.rules_model`'s (callers import all of it from
:mod:`shared.alerting.rules`); a document that fails raises
:class:`~shared.alerting.rules.RulesError` naming every problem and where it is.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import yaml

from shared.alerting import templates
from shared.alerting.rules_model import DEFAULT_SEVERITY_MAP, Action, Grouping, Rule, RulesError, RuleSet, Selection
from shared.contract.fields import InvalidMessageError
from shared.contract.model import Severity
from shared.platform.times import parse_iso
from shared.servicenow.query import TABLE_PATTERN

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
RULE_FIELDS = {
    "name",
    "enabled",
    "created_at",
    "minimal_severity",
    "protocols",
    "engines",
    "system_notifications",
    "alert_notifications",
    "sensors",
    "sites",
    "zones",
    "actions",
}
ACTION_FIELDS = {
    "name",
    "connection",
    "report",
    "table",
    "short_description",
    "severity_map",
    "fields",
    "field_map",
    "on_closed",
    "close_code",
    "close_notes",
    "write_back",
    "done_states",
    "learn_close_codes",
    "group",
    "configuration_item",
    "affected_cis",
    "impact_from_criticality",
}
GROUP_FIELDS = {"key", "window_minutes"}
MAX_GROUP_WINDOW_MINUTES = 7 * 24 * 60


# -- parsing and validation -----------------------------------------------------------------
class _Collector:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, message: str) -> None:
        self.errors.append(message)


def _selection(raw: Any, where: str, errors: _Collector) -> Selection:
    if raw is None or raw == "all":
        return Selection()
    if isinstance(raw, list) and raw and all(isinstance(v, str) and v.strip() for v in raw):
        return Selection(tuple(dict.fromkeys(v.strip() for v in raw)))
    errors.fail(f"{where}: expected 'all' or a non-empty list of names")
    return Selection()


def _flag(raw: Mapping[str, Any], key: str, default: bool, where: str, errors: _Collector) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        errors.fail(f"{where}.{key}: expected true or false")
        return default
    return value


def _named_object(raw: Any, where: str, allowed: set[str], errors: _Collector) -> bool:
    """Common checks of an action or rule: an object, known fields only, a valid name."""
    if not isinstance(raw, dict):
        errors.fail(f"{where}: expected an object")
        return False
    for key in sorted(set(raw) - allowed):
        errors.fail(f"{where}.{key}: unknown field (expected {', '.join(sorted(allowed))})")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        errors.fail(f"{where}.name: expected 1-64 letters, digits, spaces, '.', '_' or '-'")
    return True


def _severity_map(raw: Mapping[str, Any], where: str, errors: _Collector) -> dict[str, tuple[int, int]]:
    severity_map = dict(DEFAULT_SEVERITY_MAP)
    for label, pair in (raw.get("severity_map") or {}).items():
        if label not in DEFAULT_SEVERITY_MAP or not (
            isinstance(pair, dict) and pair.get("impact") in (1, 2, 3) and pair.get("urgency") in (1, 2, 3)
        ):
            errors.fail(
                f"{where}.severity_map.{label}: expected a severity (Warning…Critical) mapped to "
                "{'impact': 1-3, 'urgency': 1-3}"
            )
            continue
        severity_map[label] = (pair["impact"], pair["urgency"])
    return severity_map


def _check_fields(raw: Mapping[str, Any], where: str, errors: _Collector) -> None:
    """An action's fixed values and field map: objects of field names ServiceNow accepts → text."""
    for key in ("fields", "field_map"):
        value = raw.get(key)
        if value is not None and not (
            isinstance(value, dict)
            and all(isinstance(k, str) and TABLE_PATTERN.fullmatch(k) and isinstance(v, str) for k, v in value.items())
        ):
            errors.fail(f"{where}.{key}: expected an object of field name → text")


def _check_texts(raw: Mapping[str, Any], where: str, errors: _Collector) -> None:
    """An action's texts: not empty, and their templates' placeholders known."""
    for key in ("short_description", "close_code", "close_notes"):
        if key in raw and not (isinstance(raw[key], str) and raw[key].strip()):
            errors.fail(f"{where}.{key}: expected a non-empty text")
        elif key in raw and key != "close_code" and (problem := templates.check(raw[key], assets=key != "close_notes")):
            errors.fail(f"{where}.{key}: {problem}")


def _parse_action(raw: Any, where: str, connections: Sequence[str] | None, errors: _Collector) -> Action | None:
    start = len(errors.errors)
    if not _named_object(raw, where, ACTION_FIELDS, errors):
        return None
    connection = raw.get("connection")
    if not isinstance(connection, str) or not connection:
        errors.fail(f"{where}.connection: required (the name of a ServiceNow connection)")
    elif connections is not None and connection not in connections:
        errors.fail(f"{where}.connection: {connection!r} is not in SERVICENOW_CONNECTIONS ({', '.join(connections)})")
    report = raw.get("report")
    if report not in ("incident", "full"):
        errors.fail(f"{where}.report: expected 'incident' or 'full'")
    table = raw.get("table", "incident" if report == "incident" else "sn_si_incident")
    if not isinstance(table, str) or not TABLE_PATTERN.fullmatch(table):
        errors.fail(f"{where}.table: {table!r} is not a ServiceNow table name")
    severity_map = _severity_map(raw, where, errors)
    _check_fields(raw, where, errors)
    on_closed = raw.get("on_closed", "new")
    if on_closed not in ("reopen", "new"):
        errors.fail(f"{where}.on_closed: expected 'reopen' or 'new'")
    _check_texts(raw, where, errors)
    write_back = raw.get("write_back", True)
    if not isinstance(write_back, bool):
        errors.fail(f"{where}.write_back: expected true or false")
    lists: dict[str, tuple[str, ...]] = {}
    for key in ("done_states", "learn_close_codes"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            what = "record states" if key == "done_states" else "close codes"
            errors.fail(f"{where}.{key}: expected a list of texts ({what})")
            value = []
        lists[key] = tuple(value)
    for target, template in (raw.get("field_map") or {}).items() if isinstance(raw.get("field_map"), dict) else ():
        if isinstance(template, str) and (problem := templates.check(template)):
            errors.fail(f"{where}.field_map.{target}: {problem}")
    group = _grouping(raw.get("group"), f"{where}.group", errors) if "group" in raw else None
    assets = _asset_options(raw, where, errors)
    if len(errors.errors) > start:
        return None
    options = {k: raw[k] for k in ("short_description", "close_code", "close_notes") if k in raw}
    return Action(
        name=raw["name"],
        connection=raw["connection"],
        report=raw["report"],
        table=table,
        severity_map=severity_map,
        fields=dict(raw.get("fields") or {}),
        field_map=raw.get("field_map"),
        on_closed=on_closed,
        write_back=write_back,
        done_states=lists["done_states"],
        learn_close_codes=lists["learn_close_codes"],
        group=group,
        **assets,
        **options,
    )


def _asset_options(raw: Mapping[str, Any], where: str, errors: _Collector) -> dict[str, Any]:
    """Which device's CI the record names, whether the others are its affected CIs, and the impact by the
    CI's criticality."""
    role = raw.get("configuration_item", "destination")
    if role not in ("destination", "source"):
        errors.fail(f"{where}.configuration_item: expected 'destination' or 'source', got {role!r}")
    affected = _flag(raw, "affected_cis", False, where, errors)
    impacts: dict[str, int] = {}
    mapping = raw.get("impact_from_criticality", {})
    if not isinstance(mapping, dict):
        mapping = {None: None}
    for criticality, impact in mapping.items():
        if (
            not (isinstance(criticality, str) and 0 < len(criticality.strip()) <= 64)
            or isinstance(impact, bool)
            or impact not in (1, 2, 3)
        ):
            errors.fail(
                f"{where}.impact_from_criticality: expected an object of Defender criticality (e.g. High) → impact 1-3"
            )
            break
        impacts[criticality.strip().casefold()] = impact
    return {"configuration_item": role, "affected_cis": affected, "impact_from_criticality": impacts}


def _grouping(raw: Any, where: str, errors: _Collector) -> Grouping | None:
    if not isinstance(raw, dict):
        errors.fail(
            f"{where}: expected an object with 'key' (a template such as '{{sensor}}:{{title}}') and 'window_minutes'"
        )
        return None
    for key in sorted(set(raw) - GROUP_FIELDS):
        errors.fail(f"{where}.{key}: unknown field (expected {', '.join(sorted(GROUP_FIELDS))})")
    key = raw.get("key")
    if not isinstance(key, str) or not key.strip():
        errors.fail(f"{where}.key: expected a template such as '{{sensor}}:{{title}}'")
        return None
    if problem := templates.check(key, assets=False):
        errors.fail(f"{where}.key: {problem}")
        return None
    window = raw.get("window_minutes", 60)
    if isinstance(window, bool) or not isinstance(window, int | float) or not 1 <= window <= MAX_GROUP_WINDOW_MINUTES:
        errors.fail(f"{where}.window_minutes: expected a number of minutes from 1 to {MAX_GROUP_WINDOW_MINUTES}")
        return None
    return Grouping(key.strip(), float(window))


def _parse_time(raw: Any, where: str, errors: _Collector) -> datetime | None:
    if not isinstance(raw, str):
        errors.fail(f"{where}: missing; `rules apply` stamps it (a rule acts only on alerts raised after it)")
        return None
    moment = parse_iso(raw)
    if moment is None:
        errors.fail(f"{where}: {raw!r} is not an ISO 8601 time")
    return moment


def _parse_rule(raw: Any, where: str, actions: Mapping[str, Action | None], errors: _Collector) -> Rule | None:
    start = len(errors.errors)
    if not _named_object(raw, where, RULE_FIELDS, errors):
        return None
    created_at = _parse_time(raw.get("created_at"), f"{where}.created_at", errors)
    severity = Severity.WARNING
    if "minimal_severity" in raw:
        try:
            severity = Severity.parse(raw["minimal_severity"], f"{where}.minimal_severity")
        except InvalidMessageError as exc:
            errors.fail(exc.reason)
    names = raw.get("actions")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        errors.fail(f"{where}.actions: expected a non-empty list of action names")
        names = []
    for action_name in names:
        if action_name not in actions:
            errors.fail(f"{where}.actions: {action_name!r} is not defined under 'actions'")
    alert_notifications = _flag(raw, "alert_notifications", True, where, errors)
    system_notifications = _flag(raw, "system_notifications", False, where, errors)
    if not alert_notifications and not system_notifications:
        errors.fail(f"{where}: alert_notifications and system_notifications are both off; the rule would never act")
    rule_fields = {
        key: _selection(raw.get(key), f"{where}.{key}", errors)
        for key in ("protocols", "engines", "sensors", "sites", "zones")
    }
    enabled = _flag(raw, "enabled", True, where, errors)
    if len(errors.errors) > start or created_at is None:
        return None
    return Rule(
        name=raw["name"],
        created_at=created_at,
        actions=tuple(names),
        enabled=enabled,
        minimal_severity=severity,
        system_notifications=system_notifications,
        alert_notifications=alert_notifications,
        **rule_fields,
    )


def parse_rules(document: Any, connections: Sequence[str] | None = None) -> RuleSet:
    """Validate a rules document; raise :class:`RulesError` listing every problem."""
    errors = _Collector()
    if not isinstance(document, dict):
        raise RulesError(["document: expected an object with 'actions' and 'rules'"])
    if document.get("version", 1) != 1:
        errors.fail(f"version: expected 1, got {document.get('version')!r}")
    for key in sorted(set(document) - {"version", "actions", "rules"}):
        errors.fail(f"{key}: unknown field (expected version, actions, rules)")
    raw_actions = document.get("actions")
    if not isinstance(raw_actions, list):
        errors.fail("actions: expected a list")
        raw_actions = []
    actions: dict[str, Action | None] = {}
    for index, raw in enumerate(raw_actions):
        action = _parse_action(raw, f"actions[{index}]", connections, errors)
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str):
            if name in actions:
                errors.fail(f"actions[{index}].name: {name!r} is defined twice")
            actions[name] = action
    raw_rules = document.get("rules")
    if not isinstance(raw_rules, list):
        errors.fail("rules: expected a list")
        raw_rules = []
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_rules):
        rule = _parse_rule(raw, f"rules[{index}]", actions, errors)
        if rule is not None:
            if rule.name in seen:
                errors.fail(f"rules[{index}].name: {rule.name!r} is defined twice")
            seen.add(rule.name)
            rules.append(rule)
    if errors.errors:
        raise RulesError(errors.errors)
    return RuleSet(tuple(rules), {name: action for name, action in actions.items() if action is not None})


def load_document(data: bytes | str, where: str) -> Any:
    """A rules (or alert) document from JSON or YAML text; ValueError names the source."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise ValueError(f"{where}: not UTF-8 (invalid byte at position {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    except RecursionError:
        raise ValueError(f"{where}: nested too deeply") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{where}: neither JSON nor YAML ({exc})") from None
    except RecursionError:
        raise ValueError(f"{where}: nested too deeply") from None


def stamp(document: dict[str, Any], previous: Mapping[str, Any] | None, now: datetime) -> dict[str, Any]:
    """Give each rule its creation time: kept from the applied document for a rule of the same name, else now."""
    known = {r.get("name"): r.get("created_at") for r in (previous or {}).get("rules", []) if isinstance(r, dict)}
    stamped = dict(document)
    stamped["rules"] = [
        {**rule, "created_at": rule.get("created_at") or known.get(rule.get("name")) or now.isoformat()}
        if isinstance(rule, dict)
        else rule
        for rule in document.get("rules", [])
    ]
    return stamped
