"""The dictionary of the tables the product writes through the Table API, as ServiceNow publishes them.

A real instance silently drops a field it does not have from a Table API write, so a typo in a field map is
invisible there; the emulator drops them too (:func:`known`), and serves ``sys_db_object`` and
``sys_dictionary`` rows for these tables so that ``verify`` can check the field maps against them.

Sources, per table:

- ``task`` and ``incident``: the fields of the example records in ServiceNow's Table API reference
  (ServiceNow/ServiceNowDocs, ``markdown/api-reference/rest-apis/c_TableAPI.md``: a ``problem`` and several
  ``incident`` records). The fields both show are ``task``'s; those only the incidents show are ``incident``'s.
  An instance has more (plugins, customisations); these are what the published examples show.
- ``sn_si_incident`` (Security Incident Response, extends ``task``): ``severity``, ``risk_score``,
  ``business_criticality``, ``attack_vector``, ``category``, ``subcategory``. ServiceNow's SIR pages name
  these by their labels; the column names are those its integrations use, and the table has more than these.
- ``task_ci``: ``task`` and ``ci_item`` (the *Affected CIs* related list; ServiceNow docs, Security Incident
  Response, "Identify all configuration items affected by a security incident").
- ``sys_journal_field``: ``name``, ``element``, ``element_id``, ``value`` (ServiceNowDocs,
  ``markdown/api-reference/web-services/retrieving-journal-entries.md`` queries ``element`` and ``element_id``).

The CMDB classes are written through the IRE, not the Table API, and are not listed here.

Reference fields (:data:`REFERENCES`): those the Table API doc's example records show as references (an object
with a ``link`` to ``/api/now/table/<table>/<sys_id>``): ``assigned_to``, ``caller_id`` and ``opened_by``
(``sys_user``), ``assignment_group`` and ``sys_domain`` (``sys_user_group``), ``cmdb_ci`` (``cmdb_ci``),
``company`` (``core_company``), ``location`` (``cmn_location``), ``problem_id`` (``problem``); and ``parent``
(``task``: the examples show it empty, which is how an empty reference comes back). ``task_ci``'s ``task`` and
``ci_item`` reference ``task`` and ``cmdb_ci`` (the Affected CIs list links a task to a CI).
"""

from __future__ import annotations

from collections.abc import Iterator

# Every record's system fields (the Table API doc's examples show them on every table).
SYSTEM = (
    "sys_class_name",
    "sys_created_by",
    "sys_created_on",
    "sys_domain",
    "sys_domain_path",
    "sys_id",
    "sys_mod_count",
    "sys_tags",
    "sys_updated_by",
    "sys_updated_on",
)
TASK = (
    "active",
    "activity_due",
    "additional_assignee_list",
    "approval",
    "approval_history",
    "approval_set",
    "assigned_to",
    "assignment_group",
    "business_duration",
    "business_service",
    "calendar_duration",
    "close_notes",
    "closed_at",
    "closed_by",
    "cmdb_ci",
    "comments",
    "comments_and_work_notes",
    "company",
    "contact_type",
    "correlation_display",
    "correlation_id",
    "delivery_plan",
    "delivery_task",
    "description",
    "due_date",
    "escalation",
    "expected_start",
    "follow_up",
    "group_list",
    "impact",
    "knowledge",
    "location",
    "made_sla",
    "number",
    "opened_at",
    "opened_by",
    "order",
    "parent",
    "priority",
    "reassignment_count",
    "rejection_goto",
    "short_description",
    "sla_due",
    "state",
    "time_worked",
    "upon_approval",
    "upon_reject",
    "urgency",
    "user_input",
    "watch_list",
    "wf_activity",
    "work_end",
    "work_notes",
    "work_notes_list",
    "work_start",
)
INCIDENT = (
    "business_stc",
    "calendar_stc",
    "caller_id",
    "category",
    "caused_by",
    "child_incidents",
    "close_code",
    "incident_state",
    "notify",
    "parent_incident",
    "problem_id",
    "reopen_count",
    "resolved_at",
    "resolved_by",
    "rfc",
    "severity",
    "subcategory",
)
SECURITY_INCIDENT = ("severity", "risk_score", "business_criticality", "attack_vector", "category", "subcategory")

# table → (the table it extends, the fields it defines itself)
TABLES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "task": (None, TASK),
    "incident": ("task", INCIDENT),
    "sn_si_incident": ("task", SECURITY_INCIDENT),
    "task_ci": (None, ("task", "ci_item")),
    "sys_journal_field": (None, ("name", "element", "element_id", "value")),
}


# field → the table it references, on the table that defines the field
REFERENCES: dict[str, dict[str, str]] = {
    "task": {
        "assigned_to": "sys_user",
        "assignment_group": "sys_user_group",
        "cmdb_ci": "cmdb_ci",
        "company": "core_company",
        "location": "cmn_location",
        "opened_by": "sys_user",
        "parent": "task",
        "sys_domain": "sys_user_group",
    },
    "incident": {"caller_id": "sys_user", "problem_id": "problem"},
    "task_ci": {"task": "task", "ci_item": "cmdb_ci"},
}
# Task tables outside this dictionary (their fields are kept whole), for finding a ``task`` reference's record.
EXTENDS = {"problem": "task", "change_request": "task"}


def references(table: str) -> dict[str, str]:
    """The reference fields of ``table`` (its own and inherited) and the table each references."""
    if table not in TABLES:
        return {}
    found: dict[str, str] = {}
    for name in reversed(list(lineage(table))):
        found.update(REFERENCES.get(name, {}))
    return found


def lineage(table: str) -> Iterator[str]:
    """The table and the tables it extends, nearest first."""
    current: str | None = table
    while current is not None:
        yield current
        current = TABLES[current][0]


def known(table: str) -> set[str] | None:
    """The fields a write to ``table`` keeps, or None when the table is not in this dictionary (kept whole)."""
    if table not in TABLES:
        return None
    return set(SYSTEM).union(*(TABLES[name][1] for name in lineage(table)))


def dictionary_rows() -> Iterator[dict[str, str]]:
    """``sys_dictionary`` rows (``name``: the table defining the field, ``element``: the field)."""
    for table, (_, fields) in TABLES.items():
        for element in (*SYSTEM, *fields) if TABLES[table][0] is None else fields:
            yield {"name": table, "element": element}


def table_rows() -> Iterator[dict[str, str]]:
    """``sys_db_object`` rows: ``name`` and ``super_class`` (the parent's name here; a reference on an instance)."""
    for table, (parent, _) in TABLES.items():
        yield {"name": table, "super_class": parent or ""}
