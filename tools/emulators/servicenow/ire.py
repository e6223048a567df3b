"""The Identification and Reconciliation engine, enough for the OT data model mapping.

Each class has ordered identifier entries (inherited from its parent class): attributes of the
CI itself, or attributes of a lookup row (a network adapter's MAC) owned by the CI. An item is
matched in its rule's class or any subclass, so a re-run updates instead of duplicating and a
device reclassified to a subclass moves rather than doubles. Lookup rows and relations are
written idempotently.

An item may name its source (``sys_object_source_info``: ``source_name``, which must be the request's
data source, and ``source_native_key``). A CI already recorded for that key in ``sys_object_source`` is
matched before any identifier rule; each written item's key is recorded there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tools.emulators.servicenow.store import OT_CLASSES, Record, Store, StoreError

PARENT = {
    "cmdb_ci_hardware": "cmdb_ci",
    "cmdb_ci_nids": "cmdb_ci_hardware",
    "cmdb_ci_ot": "cmdb_ci_hardware",
    **{name: "cmdb_ci_ot" for name in OT_CLASSES if name != "cmdb_ci_ot"},
}
LOOKUP_CLASSES = {
    "cmdb_ci_network_adapter": ("mac_address",),
    "cmdb_ci_ip_address": ("ip_address",),
    "cmdb_ot_entity": ("ot_correlation_id",),
}


@dataclass(frozen=True)
class Identifier:
    name: str
    attributes: tuple[str, ...]
    lookup: str | None = None  # a lookup class: match on its row, owner via `cmdb_ci`


RULES: dict[str, tuple[Identifier, ...]] = {
    "cmdb_ci_nids": (Identifier("NIDS correlation", ("correlation_id",)), Identifier("NIDS name", ("name",))),
    "cmdb_ci_hardware": (
        Identifier("Hardware correlation", ("correlation_id",)),
        Identifier("Hardware serial", ("serial_number",)),
        Identifier("Hardware MAC", ("mac_address",), lookup="cmdb_ci_network_adapter"),
        Identifier("Hardware name", ("name",)),
    ),
}


def ancestors(class_name: str) -> list[str]:
    chain = [class_name]
    while chain[-1] in PARENT:
        chain.append(PARENT[chain[-1]])
    return chain


def descendants(class_name: str) -> list[str]:
    return [name for name in [class_name, *PARENT] if class_name in ancestors(name)]


def rule_for(class_name: str) -> tuple[str, tuple[Identifier, ...]] | None:
    for name in ancestors(class_name):
        if name in RULES:
            return name, RULES[name]
    return None


class Ire:
    def __init__(self, store: Store) -> None:
        self.store = store

    def _find(self, rule_class: str, equals: dict[str, str]) -> tuple[str, Record] | None:
        for table in descendants(rule_class):
            record = self.store.find_one(table, **equals)
            if record is not None:
                return table, record
        return None

    def _identify(
        self, item: dict[str, Any], native: tuple[str, str] | None
    ) -> tuple[tuple[str, Record] | None, list[dict[str, Any]], bool]:
        class_name = item["className"]
        found = rule_for(class_name)
        if found is None:
            return None, [], False
        rule_class, identifiers = found
        attempts: list[dict[str, Any]] = []
        usable = False
        if native is not None:
            known = self.store.find_one("sys_object_source", name=native[0], id=native[1])
            match = self._find(rule_class, {"sys_id": known["target_sys_id"]}) if known else None
            attempt = {"identifierName": "Source native key", "attributes": ["source_native_key"]}
            if match is not None:
                return match, [{**attempt, "attemptResult": "MATCHED"}], True
            attempts.append({**attempt, "attemptResult": "NO_MATCH"})
        values = {k: str(v) for k, v in (item.get("values") or {}).items()}
        for identifier in identifiers:
            attempt = {
                "identifierName": identifier.name,
                "attributes": list(identifier.attributes),
                "searchOnTable": rule_class,
            }
            if identifier.lookup:
                candidates = [
                    {a: str(row.get("values", {}).get(a, "")) for a in identifier.attributes}
                    for row in item.get("lookup") or []
                    if row.get("className") == identifier.lookup
                ]
                candidates = [c for c in candidates if all(c.values())]
            else:
                candidate = {a: values.get(a, "") for a in identifier.attributes}
                candidates = [candidate] if all(candidate.values()) else []
            if not candidates:
                attempts.append({**attempt, "attemptResult": "SKIPPED"})
                continue
            usable = True
            for candidate in candidates:
                if identifier.lookup:
                    row = self.store.find_one(identifier.lookup, **candidate)
                    match = None
                    if row is not None and row.get("cmdb_ci"):
                        match = self._find(rule_class, {"sys_id": row["cmdb_ci"]})
                else:
                    match = self._find(rule_class, candidate)
                if match is not None:
                    attempts.append({**attempt, "attemptResult": "MATCHED"})
                    return match, attempts, True
            attempts.append({**attempt, "attemptResult": "NO_MATCH"})
        return None, attempts, usable

    def _reconcile_item(self, item: dict[str, Any], index: int, user: str, source: str) -> dict[str, Any]:
        class_name = str(item.get("className", ""))
        result: dict[str, Any] = {"className": class_name, "inputIndices": [index], "errorCount": 0, "errors": []}
        if rule_for(class_name) is None:
            result.update(
                operation="NO_CHANGE",
                errorCount=1,
                errors=[{"error": "INVALID_INPUT_DATA", "message": f"Unknown or non-identifiable class {class_name}"}],
            )
            return result
        native, problem = _source_info(item, source)
        if problem:
            result.update(
                operation="NO_CHANGE", errorCount=1, errors=[{"error": "INVALID_INPUT_DATA", "message": problem}]
            )
            return result
        match, attempts, usable = self._identify(item, native)
        result["identificationAttempts"] = attempts
        if not usable:
            result.update(
                operation="NO_CHANGE",
                errorCount=1,
                errors=[
                    {
                        "error": "MISSING_MATCHING_ATTRIBUTES",
                        "message": f"In payload no matching attributes found for identification of {class_name}",
                    }
                ],
            )
            return result
        values = dict((item.get("values") or {}).items())
        if match is None:
            record = self.store.insert(class_name, {**values, "discovery_source": source}, user)
            result.update(operation="INSERT", sysId=record["sys_id"])
        else:
            table, current = match
            upgraded = table != class_name and table in ancestors(class_name)
            if upgraded:  # reclassified to a subclass: move the CI (a parent class never downgrades it)
                current = self.store.move(table, class_name, current["sys_id"], sys_class_name=class_name)
                table = class_name
            changed = any(str(v) != current.get(k, "") for k, v in values.items()) or upgraded
            if changed:
                self.store.update(table, current["sys_id"], values, user)
            result.update(operation="UPDATE" if changed else "NO_CHANGE", sysId=current["sys_id"])
        owner = result["sysId"]
        if native is not None:
            self._record_source(native, owner, class_name, user)
        for row in item.get("lookup") or []:
            lookup_class = str(row.get("className", ""))
            row_values = {k: str(v) for k, v in (row.get("values") or {}).items()}
            key = LOOKUP_CLASSES.get(lookup_class)
            if key is None or not all(row_values.get(a) for a in key):
                continue
            existing = self.store.find_one(lookup_class, cmdb_ci=owner, **{a: row_values[a] for a in key})
            if existing is None:
                self.store.insert(lookup_class, {**row_values, "cmdb_ci": owner}, user)
            elif any(existing.get(k) != v for k, v in row_values.items()):
                self.store.update(lookup_class, existing["sys_id"], row_values, user)
        return result

    def _record_source(self, native: tuple[str, str], sys_id: str, class_name: str, user: str) -> None:
        values = {"name": native[0], "id": native[1], "target_sys_id": sys_id, "target_table": class_name}
        existing = self.store.find_one("sys_object_source", name=native[0], id=native[1])
        if existing is None:
            self.store.insert("sys_object_source", values, user)
        elif existing.get("target_sys_id") != sys_id or existing.get("target_table") != class_name:
            self.store.update("sys_object_source", existing["sys_id"], values, user)

    def _relation_type(self, name: str, user: str) -> str:
        existing = self.store.find_one("cmdb_rel_type", name=name)
        if existing is not None:
            return existing["sys_id"]
        parent_descriptor, _, child_descriptor = name.partition("::")
        return self.store.insert(
            "cmdb_rel_type",
            {"name": name, "parent_descriptor": parent_descriptor, "child_descriptor": child_descriptor},
            user,
        )["sys_id"]

    def reconcile(self, payload: dict[str, Any], user: str, source: str) -> dict[str, Any]:
        items = payload.get("items")
        if not isinstance(items, list):
            raise StoreError(400, "Invalid payload", "'items' must be a list")
        with self.store.lock:
            results = [
                self._reconcile_item(item if isinstance(item, dict) else {}, i, user, source)
                for i, item in enumerate(items)
            ]
            relations = []
            for relation in payload.get("relations") or []:
                try:
                    parent = results[int(relation["parent"])].get("sysId")
                    child = results[int(relation["child"])].get("sysId")
                    rel_type = self._relation_type(str(relation["type"]), user)
                except (KeyError, IndexError, TypeError, ValueError):
                    relations.append(
                        {
                            "className": "cmdb_rel_ci",
                            "operation": "NO_CHANGE",
                            "errorCount": 1,
                            "errors": [{"error": "INVALID_INPUT_DATA", "message": "bad relation"}],
                        }
                    )
                    continue
                if not parent or not child:
                    relations.append(
                        {
                            "className": "cmdb_rel_ci",
                            "operation": "NO_CHANGE",
                            "errorCount": 1,
                            "errors": [{"error": "INVALID_INPUT_DATA", "message": "relation to an unidentified item"}],
                        }
                    )
                    continue
                existing = self.store.find_one("cmdb_rel_ci", parent=parent, child=child, type=rel_type)
                if existing is None:
                    existing = self.store.insert(
                        "cmdb_rel_ci", {"parent": parent, "child": child, "type": rel_type}, user
                    )
                    operation = "INSERT"
                else:
                    operation = "NO_CHANGE"
                relations.append(
                    {"className": "cmdb_rel_ci", "operation": operation, "sysId": existing["sys_id"], "errorCount": 0}
                )
        return {"items": results, "relations": relations}


def _source_info(item: dict[str, Any], data_source: str) -> tuple[tuple[str, str] | None, str]:
    """The item's (source name, native key), or the reason its ``sys_object_source_info`` is refused."""
    info = item.get("sys_object_source_info")
    if info is None:
        return None, ""
    if not isinstance(info, dict):
        return None, "sys_object_source_info must be an object"
    name, key = info.get("source_name"), info.get("source_native_key")
    if not isinstance(name, str) or not name or not isinstance(key, str) or not key:
        return None, "sys_object_source_info needs source_name and source_native_key"
    if name != data_source:
        return None, f"sys_object_source_info.source_name '{name}' is not the data source '{data_source}'"
    return (name, key), ""
