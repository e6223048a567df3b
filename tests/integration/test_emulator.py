"""The emulator's wire behaviour, driven with plain `requests` as any client would see it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import SN_CLIENT_ID, SN_CLIENT_SECRET, SN_PASSWORD, SN_USER
from tools.emulators.servicenow import OAuthClient, ServiceNowEmulator

pytestmark = pytest.mark.integration
JSON = {"Accept": "application/json", "Content-Type": "application/json"}


@pytest.fixture
def http(servicenow: ServiceNowEmulator) -> Iterator[requests.Session]:
    session = requests.Session()
    session.verify = str(servicenow.ca_pem)
    yield session
    session.close()


def token(http: requests.Session, servicenow: ServiceNowEmulator, **form: str) -> requests.Response:
    body = {"client_id": SN_CLIENT_ID, "client_secret": SN_CLIENT_SECRET, **form}
    return http.post(f"{servicenow.url}/oauth_token.do", data=body)


def test_password_grant_refresh_grant_and_expiry(servicenow: ServiceNowEmulator, http: requests.Session) -> None:
    first = token(http, servicenow, grant_type="password", username=SN_USER, password=SN_PASSWORD).json()
    assert first["token_type"] == "Bearer" and first["expires_in"] == 1799 and first["scope"] == "useraccount"
    again = token(http, servicenow, grant_type="password", username=SN_USER, password=SN_PASSWORD).json()
    assert again["access_token"] == first["access_token"]  # still valid: the same access token comes back
    refreshed = token(http, servicenow, grant_type="refresh_token", refresh_token=first["refresh_token"]).json()
    assert refreshed["access_token"] != first["access_token"]
    assert refreshed["refresh_token"] == first["refresh_token"]  # not rotated
    api = f"{servicenow.url}/api/now/table/incident"
    assert http.get(api, headers={"Authorization": f"Bearer {refreshed['access_token']}"}).status_code == 200
    servicenow.clock_offset += 1800
    expired = http.get(api, headers={"Authorization": f"Bearer {refreshed['access_token']}"})
    assert expired.status_code == 401
    assert expired.json()["error"]["message"] == "User Not Authenticated"


def test_bad_credentials_json_body_and_revoked_refresh_token(
    servicenow: ServiceNowEmulator, http: requests.Session
) -> None:
    denied = {"error_description": "access_denied", "error": "server_error"}
    bad = token(http, servicenow, grant_type="password", username=SN_USER, password="nope")
    assert (bad.status_code, bad.json()) == (401, denied)
    as_json = http.post(f"{servicenow.url}/oauth_token.do", json={"grant_type": "password", "client_id": SN_CLIENT_ID})
    assert as_json.status_code == 401  # the token endpoint takes form bodies only
    grant = token(http, servicenow, grant_type="password", username=SN_USER, password=SN_PASSWORD).json()
    http.post(f"{servicenow.url}/_emulator/revoke", json={"token": grant["refresh_token"]})
    revoked = token(http, servicenow, grant_type="refresh_token", refresh_token=grant["refresh_token"])
    assert (revoked.status_code, revoked.json()) == (401, denied)


def test_client_credentials_grant_only_when_enabled(servicenow: ServiceNowEmulator, http: requests.Session) -> None:
    assert token(http, servicenow, grant_type="client_credentials").status_code == 401
    servicenow.oauth.clients["cc"] = OAuthClient("cc", "cc-secret", client_credentials_user=SN_USER)
    body = http.post(
        f"{servicenow.url}/oauth_token.do",
        data={"grant_type": "client_credentials", "client_id": "cc", "client_secret": "cc-secret"},
    ).json()
    assert "refresh_token" not in body and body["access_token"]


def test_table_api_wire_details(servicenow: ServiceNowEmulator, http: requests.Session) -> None:
    http.auth = (SN_USER, SN_PASSWORD)
    api = f"{servicenow.url}/api/now/table/incident"
    assert http.post(api, data="{}", headers={"Content-Type": "application/json", "Accept": None}).status_code == 400
    created = http.post(api, json={"short_description": "x"}, headers=JSON)
    assert created.status_code == 201 and created.headers["Location"].endswith(created.json()["result"]["sys_id"])
    assert created.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert created.headers["X-Transaction-ID"]
    quiet = http.post(api, json={"short_description": "y"}, headers={**JSON, "X-no-response-body": "true"})
    assert (quiet.status_code, quiet.content) == (201, b"")
    both = http.post(api, json=[{"short_description": "first"}, {"short_description": "second"}], headers=JSON)
    assert both.json()["result"]["short_description"] == "first"
    assert len(servicenow.store.all("incident")) == 3
    listing = http.get(api, params={"sysparm_limit": 1, "sysparm_offset": 1})
    assert listing.headers["X-Total-Count"] == "3"
    assert 'rel="next"' in listing.headers["Link"] and 'rel="prev"' in listing.headers["Link"]
    assert http.get(api, params={"sysparm_query": "short_description=zzz"}).json() == {"result": []}
    v1 = http.get(f"{servicenow.url}/api/now/v1/table/incident", params={"sysparm_query": "short_description=zzz"})
    assert v1.status_code == 404
    missing = http.patch(f"{api}/{'0' * 32}", json={"state": "2"}, headers=JSON)
    assert missing.status_code == 404 and missing.json()["status"] == "failure"
    assert http.get(api, params={"sysparm_offset": -1}).status_code == 400
    fields = {"sysparm_fields": "number,nonexistent", "sysparm_display_value": "all", "sysparm_limit": "1"}
    shaped = http.get(api, params=fields).json()["result"][0]
    assert list(shaped) == ["number"] and set(shaped["number"]) == {"display_value", "value"}
    assert http.get(api, params={"short_description": "first"}).headers["X-Total-Count"] == "1"


def test_incident_rules_priority_data_policy_and_journal(
    servicenow: ServiceNowEmulator, http: requests.Session
) -> None:
    http.auth = (SN_USER, SN_PASSWORD)
    api = f"{servicenow.url}/api/now/table/incident"
    record = http.post(api, json={"short_description": "x", "impact": "2", "urgency": "3"}, headers=JSON).json()[
        "result"
    ]
    assert record["priority"] == "4" and record["state"] == "1"
    url = f"{api}/{record['sys_id']}"
    refused = http.patch(url, json={"state": "6"}, headers=JSON)
    assert refused.status_code == 403 and "Data Policy Exception" in refused.json()["error"]["detail"]
    http.patch(url, json={"work_notes": "seen again (2)"}, headers=JSON)
    resolved = http.patch(url, json={"state": "6", "close_code": "Solved", "close_notes": "handled"}, headers=JSON)
    assert resolved.json()["result"]["active"] == "false"
    notes = servicenow.store.all("sys_journal_field")
    assert [(n["element"], n["element_id"], n["value"]) for n in notes] == [
        ("work_notes", record["sys_id"], "seen again (2)")
    ]


def test_busy_session_cookie_gets_202(servicenow: ServiceNowEmulator, http: requests.Session) -> None:
    servicenow.session_queue_limit = 1
    servicenow.faults.configure({"latency_ms": 300})
    http.auth = (SN_USER, SN_PASSWORD)
    statuses: list[int] = []

    def call() -> None:
        statuses.append(
            http.get(f"{servicenow.url}/api/now/table/incident", headers={"Cookie": "JSESSIONID=SHARED"}).status_code
        )

    threads = [threading.Thread(target=call) for _ in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        servicenow.session_queue_limit = 10
    assert sorted(statuses).count(202) >= 1 and 200 in statuses


def test_faults_through_the_admin_api(servicenow: ServiceNowEmulator, http: requests.Session) -> None:
    http.auth = (SN_USER, SN_PASSWORD)
    api = f"{servicenow.url}/api/now/table/incident"
    http.post(f"{servicenow.url}/_emulator/faults", json={"error_rates": {"503": 0.5}, "seed": 7})
    statuses = [http.get(api).status_code for _ in range(200)]
    assert 70 <= statuses.count(503) <= 130 and set(statuses) == {200, 503}
    http.delete(f"{servicenow.url}/_emulator/faults")
    http.post(f"{servicenow.url}/_emulator/faults", json={"fail_next": [{"status": 429, "retry_after": "2"}]})
    limited = http.get(api)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert limited.json()["error"]["message"] == "Rate limit exceeded" and "X-RateLimit-Reset" in limited.headers
    assert http.get(api).status_code == 200
    stats = http.get(f"{servicenow.url}/_emulator/stats").json()
    assert stats["faults_injected"] >= 71


def test_each_answer_carries_the_servers_own_time(servicenow: ServiceNowEmulator, http: requests.Session) -> None:
    # What a benchmark subtracts from the client's time to tell the instance's wait from its own.
    http.auth = (SN_USER, SN_PASSWORD)
    http.post(f"{servicenow.url}/_emulator/faults", json={"latency_ms": 80})
    try:
        answer = http.get(f"{servicenow.url}/api/now/table/incident")
    finally:
        http.delete(f"{servicenow.url}/_emulator/faults")
    name, _, duration = answer.headers["Server-Timing"].partition(";dur=")
    assert name == "server" and 80 <= float(duration) <= answer.elapsed.total_seconds() * 1000


def test_a_saturated_instance_refuses_beyond_its_transactions_without_retry_after(
    servicenow: ServiceNowEmulator, http: requests.Session
) -> None:
    servicenow.faults.configure({"latency_ms": 1000})  # each transaction holds its slot a second
    http.post(f"{servicenow.url}/_emulator/limits", json={"max_transactions": 2}).raise_for_status()
    url = f"{servicenow.url}/api/now/table/incident?sysparm_limit=1"
    answers: list[requests.Response] = []

    start = threading.Barrier(6)

    def call() -> None:
        with requests.Session() as own:
            own.verify = str(servicenow.ca_pem)
            start.wait()  # all six at once
            answers.append(own.get(url, auth=(SN_USER, SN_PASSWORD), timeout=10))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [a for a in answers if a.status_code == 429]
    assert sorted(a.status_code for a in answers).count(200) >= 2 and refused
    assert all("Retry-After" not in a.headers for a in refused)  # a full semaphore says not when
    assert refused[0].json()["error"]["message"] == "Too many requests"
    servicenow.faults.configure({"latency_ms": 0})
    assert http.get(url, auth=(SN_USER, SN_PASSWORD)).status_code == 200  # free again once they finished


def test_an_hourly_rate_limit_rule_answers_with_its_headers(
    servicenow: ServiceNowEmulator, http: requests.Session
) -> None:
    http.post(f"{servicenow.url}/_emulator/limits", json={"rate_limit_per_hour": 2}).raise_for_status()
    url = f"{servicenow.url}/api/now/table/incident?sysparm_limit=1"
    first, second, third = (http.get(url, auth=(SN_USER, SN_PASSWORD)) for _ in range(3))
    assert first.status_code == second.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == "2" and int(first.headers["X-RateLimit-Reset"]) > 0
    assert third.status_code == 429
    assert 3500 <= int(third.headers["Retry-After"]) <= 3600
    assert third.headers["X-RateLimit-Reset"] == first.headers["X-RateLimit-Reset"]
    assert third.json()["error"]["detail"] == "Rate limit of 2 requests per hour for Table API exceeded"
    servicenow.reset()  # limits are per test
    assert http.get(url, auth=(SN_USER, SN_PASSWORD)).status_code == 200


def test_reference_fields_in_each_display_mode(servicenow: ServiceNowEmulator) -> None:
    """The Table API doc's four renderings of a reference; a reference to a record that is not there keeps its
    sys_id with an empty display value; a field that is not a reference is never rendered as one."""
    ci = servicenow.store.insert("cmdb_ci_ot_hmi", {"name": "HMI-7"}, "seed")
    missing = "0" * 32
    record = servicenow.store.insert(
        "incident", {"cmdb_ci": ci["sys_id"], "problem_id": missing, "correlation_id": ci["sys_id"]}, "seed"
    )
    path = f"/api/now/table/incident/{record['sys_id']}"
    link = f"{servicenow.url}/api/now/table/cmdb_ci/{ci['sys_id']}"

    def read(**params: str) -> dict[str, Any]:
        query = {"sysparm_fields": "cmdb_ci,problem_id,correlation_id", **params}
        response = requests.get(
            servicenow.url + path, params=query, auth=(SN_USER, SN_PASSWORD), verify=str(servicenow.ca_pem), timeout=10
        )
        result: dict[str, Any] = response.json()["result"]
        return result

    assert read()["cmdb_ci"] == {"link": link, "value": ci["sys_id"]}
    assert read(sysparm_exclude_reference_link="true")["cmdb_ci"] == ci["sys_id"]
    assert read(sysparm_display_value="true")["cmdb_ci"] == {"display_value": "HMI-7", "link": link}
    assert read(sysparm_display_value="true", sysparm_exclude_reference_link="true")["cmdb_ci"] == "HMI-7"
    every = read(sysparm_display_value="all")
    assert every["cmdb_ci"] == {"display_value": "HMI-7", "link": link, "value": ci["sys_id"]}
    assert every["problem_id"]["value"] == missing and every["problem_id"]["display_value"] == ""
    assert every["correlation_id"] == {"display_value": ci["sys_id"], "value": ci["sys_id"]}
