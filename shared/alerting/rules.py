"""Forwarding rules: which alerts and notifications go to which ServiceNow actions.

A rules document (JSON or YAML, read and validated in :mod:`shared.alerting.rules_document`) holds named
``actions`` and ``rules``. A
rule has the seed's fields — name, minimal severity (that level and above), protocols (``all`` or
a list), engines (``all`` or a list), system notifications, alert notifications, actions — plus
``enabled`` and filters by sensor, site and zone. A rule acts only on alerts raised after it was
created; ``created_at`` is stamped by the tool that applies the document. Rules name actions, so
two rules that pick the same action for an alert still produce one record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from shared.alerting.rules_document import load_document, parse_rules, stamp
from shared.alerting.rules_model import (
    DEFAULT_SEVERITY_MAP,
    Action,
    Decision,
    Grouping,
    ReportType,
    Rule,
    RulesError,
    RuleSet,
    Selection,
)
from shared.contract.model import AlertMessage

# The one name for the rules: their types (rules_model) and their documents (rules_document) are imported from here.
__all__ = [
    "DEFAULT_SEVERITY_MAP", "Action", "Decision", "Grouping", "ReportType", "Rule", "RuleSet", "RulesError",
    "Selection", "describe", "evaluate", "load_document", "mentioned_protocols", "parse_rules", "stamp",
]  # fmt: skip


# -- matching ------------------------------------------------------------------------------
def mentioned_protocols(message: AlertMessage, candidates: Iterable[str]) -> list[str]:
    """Protocols named by the message: the sender's ``protocol`` field, else whole words of the alert text."""
    if message.protocol:
        return [message.protocol]
    alert = message.alert
    if alert is None:
        return []
    information = alert.additional_information or {}
    text = " ".join([alert.title, alert.message, *map(str, information.get("information") or [])]).lower()
    return [p for p in candidates if re.search(rf"(?<![a-z0-9]){re.escape(p.lower())}(?![a-z0-9])", text)]


def _skip_reason(rule: Rule, message: AlertMessage) -> str | None:
    if not rule.enabled:
        return "rule disabled"
    if message.raised_at <= rule.created_at:
        return "raised before the rule was created"
    sensor = message.sensor
    if not rule.sensors.admits(sensor.name) and not rule.sensors.admits(sensor.id):
        return f"sensor {sensor.name!r} not selected"
    if not rule.sites.admits(sensor.site):
        return f"site {sensor.site!r} not selected"
    if not rule.zones.admits(sensor.zone):
        return f"zone {sensor.zone!r} not selected"
    if message.kind == "system":
        return None if rule.system_notifications else "system notifications off"
    if not rule.alert_notifications:
        return "alert notifications off"
    alert = message.alert
    assert alert is not None
    if alert.severity < rule.minimal_severity:
        return f"severity {alert.severity.label} below {rule.minimal_severity.label}"
    if not rule.engines.admits(alert.engine):
        return f"engine {alert.engine!r} not selected"
    if rule.protocols.values is not None and not rule.protocols.admits_any(
        mentioned_protocols(message, rule.protocols.values)
    ):
        return "protocol not selected"
    return None


def evaluate(rules: RuleSet, message: AlertMessage) -> Decision:
    """Select actions for an ``alert`` or ``system`` message (``alert_status`` is not routed by rules)."""
    matched: list[str] = []
    actions: dict[str, Action] = {}
    skipped: dict[str, str] = {}
    for rule in rules.rules:
        reason = _skip_reason(rule, message)
        if reason is not None:
            skipped[rule.name] = reason
            continue
        matched.append(rule.name)
        for name in rule.actions:
            actions.setdefault(name, rules.actions[name])
    return Decision(tuple(matched), tuple(actions.values()), skipped)


def describe(rule: Rule) -> str:
    """Every condition of a rule on one line, as `rules list` shows it."""
    parts = [
        "enabled" if rule.enabled else "disabled",
        f"severity ≥ {rule.minimal_severity.label}" if rule.alert_notifications else "",
        *(
            f"{label} {', '.join(selection.names)}"
            for label, selection in (
                ("engines", rule.engines),
                ("protocols", rule.protocols),
                ("sensors", rule.sensors),
                ("sites", rule.sites),
                ("zones", rule.zones),
            )
            if selection.names is not None
        ),
        "alert notifications" if rule.alert_notifications else "no alert notifications",
        "system notifications" if rule.system_notifications else "",
        f"created {rule.created_at.isoformat()}",
        f"actions {', '.join(rule.actions)}",
    ]
    return f"{rule.name}: {', '.join(p for p in parts if p)}"
