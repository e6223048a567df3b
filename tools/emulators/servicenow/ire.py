"""The Identification and Reconciliation engine (``POST /api/now/identifyreconcile``), as ServiceNow documents it
for the classes the product writes.

Sources (ServiceNow/ServiceNowDocs, markdown/): the REST reference ``api-reference/rest-apis/
c_IdentifyReconcileAPI.md``; the engine ``servicenow-platform/configuration-management-database-cmdb/ire.md``
and its errors ``id-engine-error-messages.md``; reclassification ``c_CIReclassification.md``; the OT model
``servicenow-platform/cmdb-ci-class-models/cmdb-ci-class-models-operation-technology.md``; the hardware
class ``class-hardware.md``. What it does, in that order:

- **The data source.** ``sysparm_data_source`` must be a ``discovery_source`` choice of ``cmdb_ci``;
  without one the payload is stored in ``cmdb_ire_incomplete_payloads`` and never processed; an unknown one
  is ``INVALID_INPUT_DATA``.
- **Duplicates.** Two items that identify alike (the same source native key, or the same values of an
  identifier entry) reject the whole payload: ``DUPLICATE_PAYLOAD_RECORDS``, nothing committed.
- **Per item.** A class without an identification rule is ``IDENTIFICATION_RULE_MISSING``; a ``lookup`` of
  a class the rule has no lookup entry for is ``IDENTIFICATION_RULE_FOR_LOOKUP_MISSING`` (the OT and
  hardware rules look up ``cmdb_serial_number`` and ``cmdb_ci_network_adapter``); a ``related`` item of a
  class the rule has no related entry for is ``IDENTIFICATION_RULE_FOR_RELATED_ITEM_MISSING``
  (``cmdb_ot_entity`` is one of the OT rule's); a reference field's value must be the sys_id of a record of
  the referenced table; a dependent class (``cmdb_ci_ip_address``) needs its ``Owns::Owned by`` relation in
  the payload (``MISSING_DEPENDENCY``).
- **Identification.** ``sys_object_source_info`` first (its ``source_name`` must be the data source), then
  the rule's identifier entries in priority order; an item a source key does not find and whose criterion
  attributes are incomplete is ``MISSING_MATCHING_ATTRIBUTES`` (sysId ``Unknown``). There is no
  ``correlation_id`` shortcut: it is no identifier of these rules.
- **Reconciliation.** A match in the item's class is an ``UPDATE`` (or ``NO_CHANGE``); in an ancestor class
  ``UPDATE_WITH_UPGRADE``, a descendant ``UPDATE_WITH_DOWNGRADE``, another class of the same rule
  ``UPDATE_WITH_SWITCH`` (allowed by default); a class of another rule ``RECLASSIFICATION_NOT_ALLOWED``.
  Every identified item gets ``discovery_source`` and ``last_discovered``, changed or not.
- **Relations** by item index; the type must be a ``cmdb_rel_type`` name.

Answers carry ``inputIndices`` (the docs do not promise input order: ``/_emulator/ire`` ``{"shuffle": true}``
returns the items in another order, so a client that pairs by position fails).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tools.emulators.servicenow.store import Record, Store, StoreError

# The class tree (OT model page: "CMDB CI Class Models adds the following classes for OT"; NIDS from
# cmdb-network-ids-nids-ci-extension-class.md).
_CONTROL = ("plc", "dcs", "rtu", "ied", "cnc", "dpu", "opc_server", "scada_server", "industrial_3d_printer")
_SUPERVISORY = ("ews", "historian", "hmi", "opc_client", "scada_client")
PARENT: dict[str, str] = {
    "cmdb_ci_hardware": "cmdb_ci",
    "cmdb_ci_ids_network": "cmdb_ci_hardware",
    "cmdb_ci_nids": "cmdb_ci_ids_network",
    "cmdb_ci_ot": "cmdb_ci_hardware",
    "cmdb_ci_ot_control": "cmdb_ci_ot",
    "cmdb_ci_ot_supervisory": "cmdb_ci_ot",
    "cmdb_ci_ot_control_module": "cmdb_ci_ot_control",
    "cmdb_ci_ot_qics": "cmdb_ci_ot_control",
    **{f"cmdb_ci_ot_{name}": "cmdb_ci_ot_control" for name in _CONTROL},
    **{f"cmdb_ci_ot_{name}": "cmdb_ci_ot_supervisory" for name in _SUPERVISORY},
    "cmdb_ci_ip_address": "cmdb_ci",
    "cmdb_ci_network_adapter": "cmdb_ci",
}
# Reference fields the product may fill and the table each references (class-hardware.md: "The
# Manufacturer and Model ID attributes are reference attributes to the Company [core_company] and Product
# Model [cmdb_model] tables"; the OT entity's site references cmdb_ci_ot_isa_entity).
REFERENCES = {
    "manufacturer": "core_company",
    "vendor": "core_company",
    "model_id": "cmdb_model",
    "isa_entity_site": "cmdb_ci_ot_isa_entity",
    "owned_by_cmdb_ci": "cmdb_ci",
}
# Relationship types every instance has (cmdb_rel_type), the ones the product uses among them.
RELATION_TYPES = (
    "Connects to::Connected by",
    "Depends on::Used by",
    "Detects::Detected by",
    "IP Connection::IP Connection",
    "Owns::Owned by",
    "Runs on::Runs",
)
OWNS = "Owns::Owned by"


@dataclass(frozen=True)
class Entry:
    """An identifier entry: criterion attributes on the CI's table, or on a lookup table that references it."""

    attributes: tuple[str, ...]
    lookup: str | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    table: str
    entries: tuple[Entry, ...]
    related: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # class → its criterion attributes
    dependent: bool = False  # identified within its owner (an Owns::Owned by relation in the payload)

    @property
    def lookups(self) -> set[str]:
        return {entry.lookup for entry in self.entries if entry.lookup}


SERIAL = Entry(("serial_number", "serial_number_type"), lookup="cmdb_serial_number")
MAC = Entry(("mac_address", "name"), lookup="cmdb_ci_network_adapter")
RULES = {
    # "Hardware Rule" as the published answers show its entries (REST reference, the example's attempts).
    "cmdb_ci_hardware": Rule(
        "Hardware Rule", "cmdb_ci_hardware", (SERIAL, Entry(("serial_number",)), Entry(("name",)), MAC)
    ),
    # The OT rule replaces it for cmdb_ci_ot and below ("listed in priority order"; its related entries
    # include cmdb_ot_entity, identified by its IRE criterion attribute within the device).
    "cmdb_ci_ot": Rule(
        "OT Rule",
        "cmdb_ci_ot",
        (SERIAL, Entry(("serial_number",)), MAC, Entry(("name",))),
        related={"cmdb_ot_entity": ("ire_criterion_attribute",), "cmdb_firmware_install": ("firmware_version",)},
    ),
    "cmdb_ci_ip_address": Rule("IP Address", "cmdb_ci_ip_address", (Entry(("ip_address",)),), dependent=True),
}


def ancestors(class_name: str) -> list[str]:
    chain = [class_name]
    while chain[-1] in PARENT:
        chain.append(PARENT[chain[-1]])
    return chain


def descendants(class_name: str) -> list[str]:
    return [name for name in [class_name, *PARENT] if class_name in ancestors(name)]


def rule_for(class_name: str) -> Rule | None:
    if class_name not in PARENT:
        return None
    return next((RULES[name] for name in ancestors(class_name) if name in RULES), None)


class ItemError(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code, self.message = code, message
        super().__init__(message)


@dataclass
class _Plan:
    """One item's identification, before anything is written."""

    index: int
    item: dict[str, Any]
    rule: Rule
    match: tuple[str, Record] | None
    attempts: list[dict[str, Any]]
    native: tuple[str, str] | None


class Ire:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.shuffle = False
        self.rng = random.Random(0)  # the shuffled order  # nosec B311

    def seed(self) -> None:
        """The relationship types an instance has before anything is written."""
        for name in RELATION_TYPES:
            parent, _, child = name.partition("::")
            self.store.insert(
                "cmdb_rel_type", {"name": name, "parent_descriptor": parent, "child_descriptor": child}, "system"
            )

    # -- the payload -----------------------------------------------------------------------------
    def reconcile(self, payload: dict[str, Any], user: str, source: str) -> dict[str, Any]:
        items = payload.get("items")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise StoreError(400, "Invalid payload", "'items' must be a list of objects")
        relations = payload.get("relations") or []
        if not isinstance(relations, list) or not all(isinstance(r, dict) for r in relations):
            raise StoreError(400, "Invalid payload", "'relations' must be a list of objects")
        with self.store.lock:
            if not source:
                self.store.insert("cmdb_ire_incomplete_payloads", {"payload": json.dumps(payload)}, user)
                return self._refused(
                    items,
                    "INVALID_INPUT_DATA",
                    "In payload no data source exist. You need to provide choice value from choice field "
                    "[discovery_source] in table [cmdb_ci]",
                )
            if self.store.find_one("sys_choice", name="cmdb_ci", element="discovery_source", value=source) is None:
                return self._refused(
                    items,
                    "INVALID_INPUT_DATA",
                    f"In payload invalid data source [{source}] exist. You need to provide a valid choice value "
                    "from field [discovery_source] in table [cmdb_ci]",
                )
            duplicate = self._duplicates(items)
            if duplicate:
                return self._refused(items, "DUPLICATE_PAYLOAD_RECORDS", duplicate)
        owners = self._owners(items, relations)
        written: dict[int, str] = {}  # item index → its sys_id, in payload order (an owner before its IPs)
        # Each item, then each relation, under the store's lock in turn, as a database locks rows rather than
        # the whole CMDB: other requests are served between them (two payloads that write one CI race, as
        # on an instance).
        # Between two rows the thread lets the interpreter go (sleep(0)): the store's lock is not fair, and a payload
        # that takes it back at once holds up the requests waiting for it (an incident's insert waited behind
        # twelve payloads' items), where a database would serve them between the rows.
        results = []
        for index, item in enumerate(items):
            with self.store.lock:
                results.append(self._item(index, item, owners, written, user, source))
            time.sleep(0)
        related = []
        for number, relation in enumerate(relations):
            with self.store.lock:
                related.append(self._relation(number, relation, results, user, len(items)))
            time.sleep(0)
        if self.shuffle:
            self.rng.shuffle(results)
        return {
            "items": results,
            "additionalCommittedItems": [],
            "relations": related,
            "additionalCommittedRelations": [],
        }

    def _refused(self, items: list[Any], code: str, message: str) -> dict[str, Any]:
        """Every item refused with one error, nothing committed."""
        answers = [
            _answer(
                index, str(item.get("className", "")), "NO_CHANGE", "Unknown", [], [{"error": code, "message": message}]
            )
            for index, item in enumerate(items)
        ]
        return {"items": answers, "additionalCommittedItems": [], "relations": [], "additionalCommittedRelations": []}

    def _duplicates(self, items: list[dict[str, Any]]) -> str:
        """The documented message for the first two items that would identify alike, or ''."""
        seen: dict[tuple[Any, ...], int] = {}
        for index, item in enumerate(items):
            class_name = str(item.get("className", ""))
            rule = rule_for(class_name)
            if rule is None:
                continue
            info = item.get("sys_object_source_info")
            keys: list[tuple[tuple[Any, ...], str]] = []
            if isinstance(info, dict) and info.get("source_native_key"):
                keys.append(
                    (("source", str(info.get("source_name")), str(info["source_native_key"])), "source_native_key")
                )
            if not rule.dependent:
                values = _strings(item.get("values"))
                for entry in rule.entries:
                    if entry.lookup is None and all(values.get(a) for a in entry.attributes):
                        keys.append(
                            (
                                (rule.table, entry.attributes, tuple(values[a] for a in entry.attributes)),
                                ",".join(entry.attributes),
                            )
                        )
            for key, fields in keys:
                if key in seen:
                    return (
                        f"Found duplicate items in the payload (index {seen[key]} and {index}), using className "
                        f"[{class_name}] and fields [{fields}]. Remove duplicate items from payload"
                    )
                seen[key] = index
        return ""

    @staticmethod
    def _owners(items: list[dict[str, Any]], relations: list[dict[str, Any]]) -> dict[int, int]:
        """Dependent item index → its owner's index, from the payload's Owns::Owned by relations."""
        owners = {}
        for relation in relations:
            parent, child = relation.get("parent"), relation.get("child")
            if relation.get("type") != OWNS or not isinstance(parent, int) or not isinstance(child, int):
                continue
            if 0 <= parent < len(items) and 0 <= child < len(items):
                owners[child] = parent
        return owners

    # -- one item --------------------------------------------------------------------------------
    def _item(
        self, index: int, item: dict[str, Any], owners: dict[int, int], written: dict[int, str], user: str, source: str
    ) -> dict[str, Any]:
        class_name = str(item.get("className", ""))
        try:
            plan = self._plan(index, item, owners, source)
            owner = None
            if plan.rule.dependent:
                owner = written.get(owners[index])
                if owner is None:
                    raise ItemError(
                        "ABANDONED",
                        f"Abandoning processing payload item '{index}', since its depends on payload item "
                        f"'{owners[index]}' has errors",
                    )
            answer = self._apply(plan, class_name, user, source, owner)
            written[index] = answer["sysId"]
            return answer
        except ItemError as exc:
            return _answer(index, class_name, "NO_CHANGE", "Unknown", [], [{"error": exc.code, "message": exc.message}])

    def _plan(self, index: int, item: dict[str, Any], owners: dict[int, int], source: str) -> _Plan:
        class_name = str(item.get("className", ""))
        rule = rule_for(class_name)
        if rule is None:
            raise ItemError("IDENTIFICATION_RULE_MISSING", f"Identity Rule Missing for table [{class_name}]")
        for key, allowed, code, kind in (
            ("lookup", rule.lookups, "IDENTIFICATION_RULE_FOR_LOOKUP_MISSING", "Lookup"),
            ("related", set(rule.related), "IDENTIFICATION_RULE_FOR_RELATED_ITEM_MISSING", "Related"),
        ):
            for entry in item.get(key) or []:
                name = str(entry.get("className", "")) if isinstance(entry, dict) else ""
                if name not in allowed:
                    raise ItemError(
                        code, f"Identity Rule for table [{rule.table}] missing {kind} Rule for class [{name}]"
                    )
        self._check_references(_strings(item.get("values")))
        for related in item.get("related") or []:
            self._check_references(_strings(related.get("values")))
        if rule.dependent and index not in owners:
            raise ItemError(
                "MISSING_DEPENDENCY",
                f"In payload no relations defined for dependent class [{class_name}] that matches any "
                f"containment/hosting rules: [{OWNS}]. Add appropriate relations in payload for '{class_name}'",
            )
        native = _source_info(item, source)
        match, attempts, complete = self._identify(item, rule, native)
        if match is None and not complete:
            raise ItemError(
                "MISSING_MATCHING_ATTRIBUTES",
                f"In payload missing minimum set of input values for criterion (matching) attributes from identify "
                f"rule for table [{rule.table}]. Add these input values in payload item '{json.dumps(item)}'",
            )
        return _Plan(index, item, rule, match, attempts, native)

    def _check_references(self, values: Mapping[str, str]) -> None:
        for name, table in REFERENCES.items():
            value = values.get(name)
            if value and not any(value in self.store.rows(t) for t in descendants(table) or [table]):
                raise ItemError(
                    "INVALID_INPUT_DATA",
                    f"Found invalid sys_id in payload. No record with sys_id [{value}] exist in table [{table}] or "
                    "is a duplicate record with [duplicate_of] field set to a main CI",
                )

    def _identify(
        self, item: dict[str, Any], rule: Rule, native: tuple[str, str] | None
    ) -> tuple[tuple[str, Record] | None, list[dict[str, Any]], bool]:
        """(the match, the attempts, whether some identifier entry had its every attribute)."""
        attempts: list[dict[str, Any]] = []
        source_attempt = {"identifierName": "", "attributes": [], "hybridEntryCiAttributes": []}
        if native is None:
            attempts.append({**source_attempt, "info": "sys_object_source SKIPPED", "attemptResult": "SKIPPED"})
        else:
            known = self.store.find_one("sys_object_source", name=native[0], id=native[1])
            match = self._find(rule.table, {"sys_id": known["target_sys_id"]}) if known else None
            if match is not None:
                return (
                    match,
                    [{**source_attempt, "info": "sys_object_source MATCHED", "attemptResult": "MATCHED"}],
                    True,
                )
            attempts.append({**source_attempt, "info": "sys_object_source NO_MATCH", "attemptResult": "NO_MATCH"})
        if rule.dependent:
            return None, attempts, True  # identified within its owner when it is written
        values = _strings(item.get("values"))
        complete = False
        for entry in rule.entries:
            attempt = {
                "identifierName": rule.name,
                "attributes": list(entry.attributes),
                "searchOnTable": entry.lookup or rule.table,
                "hybridEntryCiAttributes": [],
            }
            if entry.lookup:
                candidates = [
                    {a: _strings(row.get("values")).get(a, "") for a in entry.attributes}
                    for row in item.get("lookup") or []
                    if row.get("className") == entry.lookup
                ]
            else:
                candidates = [{a: values.get(a, "") for a in entry.attributes}]
            candidates = [c for c in candidates if all(c.values())]
            if not candidates:
                attempts.append({**attempt, "attemptResult": "SKIPPED"})
                continue
            complete = True
            for candidate in candidates:
                if entry.lookup:
                    row = self.store.find_one(entry.lookup, **candidate)
                    found = self._find(rule.table, {"sys_id": row["cmdb_ci"]}) if row and row.get("cmdb_ci") else None
                else:
                    found = self._find(rule.table, candidate)
                if found is not None:
                    attempts.append({**attempt, "attemptResult": "MATCHED"})
                    return found, attempts, True
            attempts.append({**attempt, "attemptResult": "NO_MATCH"})
        return None, attempts, complete

    def _find(self, rule_class: str, equals: dict[str, str]) -> tuple[str, Record] | None:
        for table in descendants(rule_class):
            record = self.store.find_one(table, **equals)
            if record is not None:
                return table, record
        return None

    def _apply(self, plan: _Plan, class_name: str, user: str, source: str, owner: str | None) -> dict[str, Any]:
        now = self.store.now()
        values = {**_strings(plan.item.get("values")), "discovery_source": source, "last_discovered": now}
        if owner is not None:  # a dependent CI: identified by its criterion attributes within its owner
            criterion = {a: values.get(a, "") for a in plan.rule.entries[0].attributes}
            plan.match = plan.match or self._find(plan.rule.table, {**criterion, "owned_by_cmdb_ci": owner})
            values["owned_by_cmdb_ci"] = owner
        if plan.match is None:
            record = self.store.insert(
                class_name, {**values, "first_discovered": now, "sys_class_name": class_name}, user
            )
            operation, sys_id = "INSERT", record["sys_id"]
        else:
            table, current = plan.match
            operation = self._reclassify(table, class_name, current, plan.rule)
            if operation != "UPDATE":
                current = self.store.move(table, class_name, current["sys_id"], sys_class_name=class_name)
                table = class_name
            changed = any(v != current.get(k, "") for k, v in values.items() if k not in ("last_discovered",))
            self.store.update(table, current["sys_id"], values, user)  # last_discovered, always
            if operation == "UPDATE" and not changed:
                operation = "NO_CHANGE"
            sys_id = current["sys_id"]
        if plan.native is not None:
            self._record_source(plan.native, sys_id, class_name, user)
        self._lookups(plan.item, sys_id, user)
        self._related(plan.item, plan.rule, sys_id, user)
        return _answer(plan.index, class_name, operation, sys_id, plan.attempts, [])

    @staticmethod
    def _reclassify(table: str, class_name: str, current: Record, rule: Rule) -> str:
        if table == class_name:
            return "UPDATE"
        target_rule = rule_for(class_name)
        if target_rule is None or target_rule.table != rule.table:
            raise ItemError(
                "RECLASSIFICATION_NOT_ALLOWED",
                f"CI Reclassification not allowed from class: [{table}] to [{class_name}]",
            )
        if table in ancestors(class_name):
            return "UPDATE_WITH_UPGRADE"
        if class_name in ancestors(table):
            return "UPDATE_WITH_DOWNGRADE"
        return "UPDATE_WITH_SWITCH"

    def _lookups(self, item: dict[str, Any], owner: str, user: str) -> None:
        for row in item.get("lookup") or []:
            table = str(row.get("className", ""))
            values = _strings(row.get("values"))
            key = (
                {"mac_address": values.get("mac_address", "")}
                if table == "cmdb_ci_network_adapter"
                else {"serial_number": values.get("serial_number", "")}
            )
            existing = self.store.find_one(table, cmdb_ci=owner, **key)
            if existing is None:
                self.store.insert(table, {**values, "cmdb_ci": owner}, user)
            elif any(existing.get(k) != v for k, v in values.items()):
                self.store.update(table, existing["sys_id"], values, user)

    def _related(self, item: dict[str, Any], rule: Rule, owner: str, user: str) -> None:
        for row in item.get("related") or []:
            table = str(row.get("className", ""))
            values = _strings(row.get("values"))
            criterion = {a: values.get(a, "") for a in rule.related[table]}
            reference = "ot_device" if table == "cmdb_ot_entity" else "cmdb_ci"
            existing = self.store.find_one(table, **{reference: owner, **criterion})
            if existing is None:
                self.store.insert(table, {**values, reference: owner}, user)
            elif any(existing.get(k) != v for k, v in values.items()):
                self.store.update(table, existing["sys_id"], values, user)

    def _record_source(self, native: tuple[str, str], sys_id: str, class_name: str, user: str) -> None:
        values = {"name": native[0], "id": native[1], "target_sys_id": sys_id, "target_table": class_name}
        existing = self.store.find_one("sys_object_source", name=native[0], id=native[1])
        if existing is None:
            self.store.insert("sys_object_source", values, user)
        elif existing.get("target_sys_id") != sys_id or existing.get("target_table") != class_name:
            self.store.update("sys_object_source", existing["sys_id"], values, user)

    # -- relations -------------------------------------------------------------------------------
    def _relation(
        self, index: int, relation: dict[str, Any], results: list[dict[str, Any]], user: str, count: int
    ) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "className": "cmdb_rel_ci",
            "inputIndices": [index],
            "markers": [],
            "mergedPayloadIds": [],
        }
        text = json.dumps(relation)
        parent, child, name = relation.get("parent"), relation.get("child"), str(relation.get("type", ""))
        problem = ""
        rel_type = self.store.find_one("cmdb_rel_type", name=name)
        if not isinstance(parent, int) or not 0 <= parent < count:
            problem = f"Payload relations '{text}' has invalid parent record index: [{parent}]"
        elif not isinstance(child, int) or not 0 <= child < count:
            problem = f"Payload relations '{text}' has invalid child record index: [{child}]"
        elif rel_type is None:
            problem = (
                f"No such relationship with name [{name}] exist in table [cmdb_rel_type]. If out-of-box relationship "
                f"for [{name}] has been removed or renamed, it should be restored"
            )
        if problem or rel_type is None or not isinstance(parent, int) or not isinstance(child, int):
            return {
                **answer,
                "operation": "NO_CHANGE",
                "errorCount": 1,
                "errors": [{"error": "INVALID_INPUT_DATA", "message": problem}],
            }
        by_index = {r["inputIndices"][0]: r for r in results}
        parent_id, child_id = by_index[parent]["sysId"], by_index[child]["sysId"]
        if "Unknown" in (parent_id, child_id):
            return {
                **answer,
                "operation": "NO_CHANGE",
                "errorCount": 1,
                "errors": [
                    {
                        "error": "ABANDONED",
                        "message": f"While processing relations encountered errors in payload item: {text}",
                    }
                ],
            }
        existing = self.store.find_one("cmdb_rel_ci", parent=parent_id, child=child_id, type=rel_type["sys_id"])
        if existing is None:
            self.store.insert("cmdb_rel_ci", {"parent": parent_id, "child": child_id, "type": rel_type["sys_id"]}, user)
            return {**answer, "operation": "INSERT", "errorCount": 0}
        return {**answer, "operation": "NO_CHANGE", "errorCount": 0}

    def admin(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        if "shuffle" in spec:
            self.shuffle = bool(spec["shuffle"])
        return {"shuffle": self.shuffle}


def _answer(
    index: int,
    class_name: str,
    operation: str,
    sys_id: str,
    attempts: list[dict[str, Any]],
    errors: list[dict[str, str]],
) -> dict[str, Any]:
    """One item's answer, with the keys the published answers carry (``errors`` only when there are any)."""
    answer: dict[str, Any] = {
        "className": class_name,
        "operation": operation,
        "sysId": sys_id,
        "identifierEntrySysId": "Unknown" if errors else "a8e1a2b3c4d5e6f708192a3b4c5d6e7f",
        "identificationAttempts": attempts,
        "markers": [],
        "inputIndices": [index],
        "mergedPayloadIds": [],
        "errorCount": len(errors),
    }
    if errors:
        answer["errors"] = errors
    return answer


def _strings(values: Any) -> dict[str, str]:
    if not isinstance(values, dict):
        return {}
    return {str(k): "" if v is None else str(v).lower() if isinstance(v, bool) else str(v) for k, v in values.items()}


def _source_info(item: dict[str, Any], data_source: str) -> tuple[str, str] | None:
    """The item's (source name, native key); a source_name other than the data source is refused."""
    info = item.get("sys_object_source_info")
    if info is None:
        return None
    if not isinstance(info, dict) or not info.get("source_name") or not info.get("source_native_key"):
        raise ItemError("INVALID_INPUT_DATA", "sys_object_source_info needs source_name and source_native_key")
    if info["source_name"] != data_source:
        raise ItemError(
            "INVALID_INPUT_DATA",
            f"In payload invalid data source [{info['source_name']}] exist. You need to provide a valid choice "
            "value from field [discovery_source] in table [cmdb_ci]",
        )
    return str(info["source_name"]), str(info["source_native_key"])
