"""``verify`` against the whole local product (AppStack: the host in its own process, Azurite, the ServiceNow,
Key Vault and Resource Graph emulators): green end to end, and each kind of failure named with its fix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from shared.app.verify import Check, run_checks
from shared.cli.context import Operator
from shared.cli.verify import verify
from shared.settings import Settings
from tools.stack.appstack import USER, AppStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppStack]:
    with AppStack(tmp_path_factory.mktemp("verify")) as app:
        yield app


def failing(settings: Settings) -> list[Check]:
    return [c for c in run_checks(settings, end_to_end=False) if not c.ok]


def test_a_working_deployment_passes_every_check_and_a_test_alert_end_to_end(stack: AppStack) -> None:
    stack.start_host()
    try:
        result = CliRunner().invoke(verify, ["--timeout", "60"], obj=Operator(stack.settings))
    finally:
        stack.stop_host()
    lines = result.output.splitlines()
    assert result.exit_code == 0, result.output
    assert lines[-1] == "verify: everything passed"
    assert any(line.startswith("ok   ServiceNow 'default' table incident: present; role itil") for line in lines)
    assert any(line.startswith("ok   Defender source 'cloud' (cloud)") for line in lines)
    (alert,) = [line for line in lines if line.startswith("ok   test alert → incident")]
    assert "created and resolved: https://" in alert and "nav_to.do?uri=incident.do?sys_id=" in alert
    (record,) = [r for r in stack.servicenow.store.all("incident") if "[TEST]" in r.get("short_description", "")]
    assert record["state"] == "6"  # resolved at once


def test_an_unreachable_queue_is_named_with_its_fix(stack: AppStack) -> None:
    (problem, *_) = failing(replace(stack.settings, alerts_queue="no-such-queue"))
    assert problem.line() == (
        "FAIL queue no-such-queue: queue no-such-queue does not exist — fix: deploy infra/bicep/main.bicep "
        "(locally: make run creates it)"
    )


def test_a_missing_secret_is_named_with_its_fix(stack: AppStack) -> None:
    name = stack.settings.connection("default").secret_name("client-secret")
    saved = stack.vault.vault.secrets.pop(name)
    try:
        problems = failing(stack.settings)
    finally:
        stack.vault.vault.secrets[name] = saved
    assert problems[0].line().startswith(f"FAIL secret {name}: missing from Key Vault (connection 'default') — fix:")
    assert f"--name {name}" in problems[0].fix


def test_a_refused_sign_in_says_to_connect_again(stack: AppStack) -> None:
    stack.servicenow.oauth.revoke()  # every token the instance issued, as a password change would
    try:
        problems = failing(stack.settings)
    finally:
        stack.connect()
    assert problems and problems[0].name == "ServiceNow 'default'"
    assert "sign-in refused" in problems[0].detail and problems[0].fix.startswith("python -m shared connect default")


def test_a_missing_role_and_a_missing_table_are_named(stack: AppStack, tmp_path: Path) -> None:
    stack.servicenow.roles[USER].discard("itil")
    stack.servicenow.seed_directory()
    try:
        (role,) = failing(stack.settings)
    finally:
        stack.servicenow.roles[USER].add("itil")
        stack.servicenow.seed_directory()
    assert role.line() == (
        f"FAIL ServiceNow 'default' table incident: present, but {USER} lacks the role itil — fix: give {USER} itil"
    )
    from shared.alerting.rules_store import read_rules
    from shared.platform.storage import blob_service

    rules = tmp_path / "rules.json"
    document = read_rules(stack.settings.forwarding.rules_location, blob_service(stack.settings.alerts_storage))
    document["actions"][0]["table"] = "sn_no_such_table"
    rules.write_text(json.dumps(document))
    location = replace(stack.settings.forwarding.rules_location, text=f"file:{rules}", path=rules)
    (table,) = failing(replace(stack.settings, forwarding=replace(stack.settings.forwarding, rules_location=location)))
    assert table.line().startswith("FAIL ServiceNow 'default' table sn_no_such_table: does not exist on the instance")


def test_a_field_the_table_does_not_have_is_named(stack: AppStack, tmp_path: Path) -> None:
    """An instance drops an unknown field from a write without a word: verify reads sys_dictionary instead."""
    from shared.alerting.rules_store import read_rules
    from shared.platform.storage import blob_service

    assert not failing(stack.settings)
    rules = tmp_path / "rules.json"
    document = read_rules(stack.settings.forwarding.rules_location, blob_service(stack.settings.alerts_storage))
    document["actions"][0]["fields"] = {"assignment_grop": "OT security"}
    rules.write_text(json.dumps(document))
    location = replace(stack.settings.forwarding.rules_location, text=f"file:{rules}", path=rules)
    (problem,) = failing(
        replace(stack.settings, forwarding=replace(stack.settings.forwarding, rules_location=location))
    )
    table = document["actions"][0].get("table", "incident")
    assert problem.line().startswith(
        f"FAIL ServiceNow 'default' fields of {table}: {table} has no field assignment_grop (ServiceNow would drop it)"
    )


def test_with_the_asset_index_the_user_may_write_cmdb_ci_and_task_ci_when_an_action_asks(
    stack: AppStack, tmp_path: Path
) -> None:
    from shared.alerting.rules_store import read_rules
    from shared.platform.storage import blob_service

    rules = tmp_path / "rules.json"
    document = read_rules(stack.settings.forwarding.rules_location, blob_service(stack.settings.alerts_storage))
    document["actions"][0]["affected_cis"] = True
    rules.write_text(json.dumps(document))
    location = replace(stack.settings.forwarding.rules_location, text=f"file:{rules}", path=rules)
    linked = replace(
        stack.settings,
        forwarding=replace(stack.settings.forwarding, rules_location=location),
        device_sync=replace(stack.settings.device_sync, enabled=True),
    )
    lines = [c.line() for c in run_checks(linked, end_to_end=False)]
    assert "ok   ServiceNow 'default' table task_ci: present; role itil" in lines, lines
    fields = next(line for line in lines if line.startswith("ok   ServiceNow 'default' fields of incident"))
    without = [c.line() for c in run_checks(stack.settings, end_to_end=False)]
    counted = next(line for line in without if line.startswith("ok   ServiceNow 'default' fields of incident"))
    assert fields != counted  # one field more: cmdb_ci, which the incident table has
    assert not any("task_ci" in line for line in without)
    stack.servicenow.roles[USER] -= {"itil", "sn_si.analyst"}
    stack.servicenow.seed_directory()
    try:
        problems = [c.line() for c in failing(linked)]
    finally:
        stack.servicenow.roles[USER] |= {"itil", "sn_si.analyst"}
        stack.servicenow.seed_directory()
    assert (
        f"FAIL ServiceNow 'default' table task_ci: present, but {USER} lacks the role itil or sn_si.basic or "
        f"sn_si.analyst — fix: give {USER} itil or sn_si.basic or sn_si.analyst"
    ) in problems, problems


@pytest.mark.timeout(300)
def test_the_after_provision_steps_sign_in_apply_the_starter_rules_and_verify_then_repeat_nothing(
    stack: AppStack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What azd's postprovision hook (and infra/deploy.sh) run, against the local stack: the template's
    outputs in the environment, the password piped in once."""
    import io
    import uuid

    from shared.cli import main
    from tools.deploy.after_provision import STARTER_RULES, run
    from tools.stack.appstack import CLIENT_SECRET, PASSWORD

    # The rules where a fresh deployment keeps them, empty yet: the host reads them from there too.
    environ = {**stack.values, "FORWARDING_RULES_LOCATION": f"rules{uuid.uuid4().hex[:8]}/forwarding-rules.json"}
    document = json.loads(stack.settings_file.read_text())
    document["Values"]["FORWARDING_RULES_LOCATION"] = environ["FORWARDING_RULES_LOCATION"]
    stack.settings_file.write_text(json.dumps(document))
    for name in list(environ):
        monkeypatch.setenv(name, environ[name])
    refresh = stack.settings.connection("default").secret_name("refresh-token")
    client = stack.settings.connection("default").secret_name("client-secret")
    saved = stack.vault.vault.secrets.pop(refresh)  # a new vault: never signed in yet, no client secret yet
    saved_client = stack.vault.vault.secrets.pop(client)
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{CLIENT_SECRET}\n{PASSWORD}\n"))
    stack.start_host()
    try:
        assert run(environ, STARTER_RULES, verify=True, command=main) == 0
        first = capsys.readouterr().out
        assert f"== stored the client secret of connection 'default' in Key Vault as {client}" in first
        assert "== sign in connection 'default': python -m shared connect default --password-stdin" in first
        assert "applied " in first and "verify: everything passed" in first
        assert run(environ, STARTER_RULES, verify=True, command=main) == 0
        again = capsys.readouterr().out
        assert "== sign in" not in again and "rules are applied already" in again
        assert "verify: everything passed" in again
    finally:
        stack.stop_host()
        if refresh not in stack.vault.vault.secrets:
            stack.vault.vault.secrets[refresh] = saved
        if client not in stack.vault.vault.secrets:
            stack.vault.vault.secrets[client] = saved_client
        document["Values"]["FORWARDING_RULES_LOCATION"] = stack.values["FORWARDING_RULES_LOCATION"]
        stack.settings_file.write_text(json.dumps(document))
