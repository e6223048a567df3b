"""How the Table API renders a record: the fields asked for, actual or display values, reference links.

ServiceNow's Table API reference (ServiceNow/ServiceNowDocs, ``markdown/api-reference/rest-apis/c_TableAPI.md``):

- ``sysparm_display_value``: ``false`` (the default) returns the values in the database, ``true`` the display
  values, ``all`` both, as ``{"display_value": …, "value": …}``; "Reference fields: The database value is
  sys_id, but the display value is a display field of the referenced record."
- ``sysparm_exclude_reference_link`` (default ``false``): unless it is ``true``, a reference field comes back
  as an object with the referenced record's Table API ``link`` — the doc's example records show
  ``"cmdb_ci": {"link": ".../api/now/table/cmdb_ci/55b3…", "value": "55b3…"}`` — and an empty reference as
  ``""``.

The emulator knows the reference fields of the tables in :mod:`~tools.emulators.servicenow.dictionary`
(``REFERENCES``); a referenced record is found in its table or any table extending it (a ``cmdb_ci`` reference
finds an OT PLC), as a query on a parent table finds its children's rows on an instance. Its display value is
its ``name``, else its ``number`` (a table's display field is configurable on an instance; these are the
defaults of the tables referenced here). A reference to a record that does not exist keeps its sys_id, with an
empty display value, as an instance keeps it. Choice labels (``state`` "New" for ``1``) are not modelled: the
display value of a field that is not a reference is its value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tools.emulators.servicenow import dictionary
from tools.emulators.servicenow.ire import PARENT as CMDB_PARENT
from tools.emulators.servicenow.store import Record, Store

DISPLAY_FIELDS = ("name", "number")


def parent_of(table: str) -> str | None:
    if table in CMDB_PARENT:
        return CMDB_PARENT[table]
    if table in dictionary.TABLES:
        return dictionary.TABLES[table][0]
    return dictionary.EXTENDS.get(table)


def extends(table: str, ancestor: str) -> bool:
    current: str | None = table
    while current is not None:
        if current == ancestor:
            return True
        current = parent_of(current)
    return False


class Renderer:
    """Renders records of ``store`` for the instance at ``url``."""

    def __init__(self, store: Store, url: Callable[[], str]) -> None:
        self.store = store
        self.url = url

    def referenced(self, table: str, sys_id: str) -> Record | None:
        with self.store.lock:
            for name in sorted(self.store.data):
                if extends(name, table) and sys_id in self.store.data[name]:
                    return self.store.data[name][sys_id]
        return None

    def display(self, table: str, sys_id: str) -> str:
        record = self.referenced(table, sys_id)
        if record is None:
            return ""
        return next((record[f] for f in DISPLAY_FIELDS if record.get(f)), "")

    def shape(self, table: str, record: Record, params: Mapping[str, str]) -> dict[str, Any]:
        fields = [f for f in params.get("sysparm_fields", "").split(",") if f]
        if fields:
            record = {f: record[f] for f in fields if f in record}  # unknown fields are silently ignored
        mode = params.get("sysparm_display_value", "false").lower()
        links = params.get("sysparm_exclude_reference_link", "false").lower() != "true"
        references = dictionary.references(table)
        return {name: self.field(references.get(name), value, mode, links) for name, value in record.items()}

    def field(self, target: str | None, value: str, mode: str, links: bool) -> Any:
        if target is None or not value:
            if mode == "all":
                return {"display_value": value, "value": value}
            return value
        shown: dict[str, Any] = {}
        if mode in ("true", "all"):
            shown["display_value"] = self.display(target, value)
        if links:
            shown["link"] = f"{self.url()}/api/now/table/{target}/{value}"
        if mode != "true":
            shown["value"] = value
        if mode == "true" and not links:
            return shown["display_value"]
        if mode == "false" and not links:
            return value
        return shown
