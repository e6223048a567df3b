"""The emulator's encoded-query parser and evaluator (the subset this project and PySNC use).

Grammar: conditions joined by ``^`` (AND), ``^OR`` (OR, binding tighter than AND) and ``^NQ`` (a
new OR'd query); ``^^`` is a literal caret; ``ORDERBY``/``ORDERBYDESC`` terms sort; a trailing
``^EQ`` is ignored. The parsed form is logged so tests can see exactly what was executed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

FIELD = re.compile(r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*")
# Longest operators first so that 'NOT IN' wins over 'IN' and '!=' over '='.
OPERATORS = (
    "ISNOTEMPTY",
    "ISEMPTY",
    "NOT LIKE",
    "NOT IN",
    "STARTSWITH",
    "ENDSWITH",
    "LIKE",
    "IN",
    "!=",
    ">=",
    "<=",
    "=",
    ">",
    "<",
)


class QuerySyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Condition:
    field: str
    operator: str
    value: str

    def as_list(self) -> list[str]:
        return [self.field, self.operator, self.value]


@dataclass
class ParsedQuery:
    # OR over groups; each group is an AND over clauses; each clause is an OR over conditions.
    groups: list[list[list[Condition]]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "groups": [[[c.as_list() for c in clause] for clause in group] for group in self.groups],
            "order": [[name, "desc" if desc else "asc"] for name, desc in self.order],
        }


def _split(text: str) -> list[tuple[str, str]]:
    """Split into (joiner, term) pairs, honouring ``^^`` as a literal caret."""
    terms: list[tuple[str, str]] = []
    joiner, current, i = "", [], 0
    while i < len(text):
        char = text[i]
        if char == "^" and text.startswith("^^", i):
            current.append("^")
            i += 2
            continue
        if char == "^":
            terms.append((joiner, "".join(current)))
            current = []
            rest = text[i + 1 :]
            if rest.startswith("NQ"):
                joiner, i = "NQ", i + 3
            elif rest.startswith("OR") and not rest.startswith("ORDERBY"):
                joiner, i = "OR", i + 3
            else:
                joiner, i = "AND", i + 1
            continue
        current.append(char)
        i += 1
    terms.append((joiner, "".join(current)))
    return terms


def _condition(term: str) -> Condition:
    match = FIELD.match(term)
    if not match:
        raise QuerySyntaxError(f"condition {term!r} does not start with a field name")
    name, rest = match.group(0), term[match.end() :]
    for operator in OPERATORS:
        if rest.startswith(operator):
            return Condition(name, operator, rest[len(operator) :])
    raise QuerySyntaxError(f"condition {term!r} has no known operator")


def parse(text: str) -> ParsedQuery:
    parsed = ParsedQuery()
    group: list[list[Condition]] = []
    for joiner, term in _split(text):
        if term in ("", "EQ"):
            continue
        if term.startswith("ORDERBYDESC"):
            parsed.order.append((term[len("ORDERBYDESC") :], True))
            continue
        if term.startswith("ORDERBY"):
            parsed.order.append((term[len("ORDERBY") :], False))
            continue
        condition = _condition(term)
        if joiner == "NQ" and group:
            parsed.groups.append(group)
            group = []
        if joiner == "OR" and group:
            group[-1].append(condition)
        else:
            group.append([condition])
    if group:
        parsed.groups.append(group)
    return parsed


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _compare(left: str, right: str) -> int:
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    return (left > right) - (left < right)


def matches_condition(record: dict[str, str], condition: Condition) -> bool:
    actual = record.get(condition.field, "")
    value, op = condition.value, condition.operator
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    if op == "ISEMPTY":
        return actual == ""
    if op == "ISNOTEMPTY":
        return actual != ""
    if op == "IN":
        return actual in members(value)
    if op == "NOT IN":
        return actual not in members(value)
    if op == "LIKE":
        return value.lower() in actual.lower()
    if op == "NOT LIKE":
        return value.lower() not in actual.lower()
    if op == "STARTSWITH":
        return actual.lower().startswith(value.lower())
    if op == "ENDSWITH":
        return actual.lower().endswith(value.lower())
    comparison = _compare(actual, value)
    return {"<": comparison < 0, "<=": comparison <= 0, ">": comparison > 0, ">=": comparison >= 0}[op]


@functools.lru_cache(maxsize=256)
def members(value: str) -> frozenset[str]:
    """An IN list's values, split once per query rather than once per record scanned."""
    return frozenset(value.split(","))


def matches(record: dict[str, str], parsed: ParsedQuery) -> bool:
    if not parsed.groups:
        return True
    return any(all(any(matches_condition(record, c) for c in clause) for clause in group) for group in parsed.groups)


def sort(records: list[dict[str, str]], parsed: ParsedQuery) -> list[dict[str, str]]:
    for name, descending in reversed(parsed.order):
        records.sort(
            key=lambda r: (_number(r.get(name, "")) is None, _number(r.get(name, "")) or 0, r.get(name, "")),
            reverse=descending,
        )
    return records
