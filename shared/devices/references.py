"""Names → sys_ids for the reference fields of the OT data model, which the IRE takes only as sys_ids ("For a
reference field, the value must be the referenced sys_id": ServiceNow's IRE REST reference).

ServiceNow's own connectors resolve a manufacturer's name to its ``core_company`` record before the IRE,
creating the company when there is none (the CMDB Integration Commons "Cleanse Company" transform); this
does the same through the Table API, each name once per run. A site is looked up among the ISA entity sites
(``cmdb_ci_ot_isa_entity``), never created: which ISA site a Defender site is, is the customer's mapping. What
cannot be resolved is left out of the payload (never sent as a name) and counted.
"""

from __future__ import annotations

import logging

from shared.http.errors import HttpError
from shared.servicenow import EncodedQuery, ServiceNowClient

logger = logging.getLogger("shared.devices.references")


class References:
    def __init__(self, servicenow: ServiceNowClient, *, create_companies: bool = True) -> None:
        self.servicenow = servicenow
        self.create_companies = create_companies
        self._companies: dict[str, str | None] = {}
        self._sites: dict[str, str | None] = {}
        self.unresolved: set[str] = set()  # "company:<name>", "site:<name>"
        self._unreadable: set[str] = set()

    def company(self, name: str) -> str | None:
        key = name.strip()
        if key not in self._companies:
            self._companies[key] = self._company(key)
            if self._companies[key] is None:
                self.unresolved.add(f"company:{key}")
        return self._companies[key]

    def site(self, name: str) -> str | None:
        key = name.strip()
        if key not in self._sites:
            self._sites[key] = self._find("cmdb_ci_ot_isa_entity", key)
            if self._sites[key] is None:
                self.unresolved.add(f"site:{key}")
        return self._sites[key]

    def _find(self, table: str, name: str) -> str | None:
        if table in self._unreadable:
            return None
        query = EncodedQuery().eq("name", name)
        try:
            found = next(iter(self.servicenow.query(table, query, fields=["sys_id"], limit=1)), None)
        except HttpError as exc:
            if exc.status not in (401, 403):
                raise
            # The integration user may not read the table: its references are left out (docs/servicenow-setup.md).
            logger.warning("cannot read %s in ServiceNow (HTTP %s); its references are left out", table, exc.status)
            self._unreadable.add(table)
            return None
        return str(found["sys_id"]) if found else None

    def _company(self, name: str) -> str | None:
        if not name:
            return None
        found = self._find("core_company", name)
        if found or not self.create_companies or "core_company" in self._unreadable:
            return found  # a company the user may not look up is not created (it would be, every run)
        try:
            created = self.servicenow.create_record("core_company", {"name": name, "manufacturer": "true"})
        except HttpError as exc:
            if exc.status not in (401, 403):
                raise
            # The integration user may not create companies: the device goes without its manufacturer.
            logger.warning(
                "cannot create company '%s' in ServiceNow (HTTP %s); devices go without it", name, exc.status
            )
            self.create_companies = False
            return None
        return str(created["sys_id"])
