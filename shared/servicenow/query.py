"""A safe builder for ServiceNow encoded queries (``sysparm_query``).

Values are data, never syntax: a literal ``^`` is escaped as ``^^`` (so ``x^NQactive=true`` stays
one value instead of starting a second query that matches everything), values ServiceNow would
evaluate as script (``javascript:``) are refused, and so are commas inside ``IN`` values, which
ServiceNow would split. Field names are checked against the dictionary's naming rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

FIELD_PATTERN = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")
TABLE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,79}$")  # a table's name, as the dictionary allows it
SYS_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
VALUE_OPERATORS = frozenset({"=", "!=", "<", "<=", ">", ">=", "LIKE", "NOT LIKE", "STARTSWITH", "ENDSWITH"})
LIST_OPERATORS = frozenset({"IN", "NOT IN"})
UNARY_OPERATORS = frozenset({"ISEMPTY", "ISNOTEMPTY"})
Scalar = str | int | float | bool


class QueryValueError(ValueError):
    """A field or value that cannot be placed in an encoded query safely."""


def _field(name: str) -> str:
    if not FIELD_PATTERN.fullmatch(name):
        raise QueryValueError(f"{name!r} is not a ServiceNow field name (lower-case letters, digits, '_', '.')")
    return name


def escape_value(value: Scalar) -> str:
    """Render one value for an encoded query: refuse script, escape ``^``."""
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if text.lstrip().lower().startswith("javascript:"):
        raise QueryValueError("query values starting with 'javascript:' are evaluated by ServiceNow; refused")
    return text.replace("^", "^^")


@dataclass(frozen=True)
class EncodedQuery:
    """Immutable: each method returns a new query. ``str(query)`` is the ``sysparm_query`` value."""

    terms: tuple[str, ...] = ()
    ordering: tuple[str, ...] = ()

    def where(self, field: str, operator: str, value: Scalar | Iterable[Scalar] | None = None) -> EncodedQuery:
        """AND a condition (``^``)."""
        return self._join("^", field, operator, value)

    def or_where(self, field: str, operator: str, value: Scalar | Iterable[Scalar] | None = None) -> EncodedQuery:
        """OR a condition with the one before it (``^OR``; binds tighter than AND)."""
        if not self.terms or self.terms[-1] == "^NQ":
            raise QueryValueError("or_where needs a condition before it")
        return self._join("^OR", field, operator, value)

    def new_query(self) -> EncodedQuery:
        """Start an alternative query (``^NQ``): records matching either side are returned."""
        if not self.terms or self.terms[-1] == "^NQ":
            raise QueryValueError("new_query needs a condition before it")
        return EncodedQuery((*self.terms, "^NQ"), self.ordering)

    def order_by(self, field: str, *, descending: bool = False) -> EncodedQuery:
        keyword = "ORDERBYDESC" if descending else "ORDERBY"
        return EncodedQuery(self.terms, (*self.ordering, keyword + _field(field)))

    def eq(self, field: str, value: Scalar) -> EncodedQuery:
        return self.where(field, "=", value)

    def in_(self, field: str, values: Iterable[Scalar]) -> EncodedQuery:
        return self.where(field, "IN", values)

    @property
    def has_order(self) -> bool:
        return bool(self.ordering)

    def _join(self, joiner: str, field: str, operator: str, value: Scalar | Iterable[Scalar] | None) -> EncodedQuery:
        condition = _field(field) + self._operand(operator, value)
        if not self.terms:
            return EncodedQuery((condition,), self.ordering)
        if self.terms[-1] == "^NQ":
            return EncodedQuery((*self.terms, condition), self.ordering)
        return EncodedQuery((*self.terms, joiner + condition), self.ordering)

    @staticmethod
    def _operand(operator: str, value: Scalar | Iterable[Scalar] | None) -> str:
        if operator in UNARY_OPERATORS:
            if value is not None:
                raise QueryValueError(f"{operator} takes no value")
            return operator
        if operator in LIST_OPERATORS:
            if value is None or isinstance(value, str | bytes) or not isinstance(value, Iterable):
                raise QueryValueError(f"{operator} takes a list of values")
            items = [escape_value(v) for v in value]
            if not items:
                raise QueryValueError(f"{operator} needs at least one value")
            for item in items:
                if "," in item:
                    raise QueryValueError(f"{operator} values cannot contain ',' (ServiceNow splits on it): {item!r}")
            return operator + ",".join(items)
        if operator in VALUE_OPERATORS:
            if value is None or not isinstance(value, Scalar):
                raise QueryValueError(f"{operator} takes one value")
            return operator + escape_value(value)
        raise QueryValueError(f"unsupported operator {operator!r}")

    def __str__(self) -> str:
        if self.terms and self.terms[-1] == "^NQ":
            raise QueryValueError("query ends with new_query() and no condition after it")
        return "^".join(filter(None, ("".join(self.terms), *self.ordering)))
