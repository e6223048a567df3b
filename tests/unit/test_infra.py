"""The Bicep deployment: it parses, it is identity-only and least-privilege, and it matches the code's settings."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

from tests.conftest import ROOT
from tools.bicep import Deployment

BICEP = ROOT / "infra" / "bicep"
FILES = sorted(BICEP.rglob("*.bicep"))
ALLOWED_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88",  # Storage Queue Data Contributor (the trigger's Update Message)
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",  # Storage Queue Data Message Sender
    "19e7f393-937e-4f77-808e-94535e297925",  # Storage Queue Data Reader (the poison queue's depth)
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",  # Storage Table Data Contributor
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",  # Key Vault Secrets Officer
    "3913510d-42f4-4e42-8a64-420c390055eb",  # Monitoring Metrics Publisher
}


@cache
def parsed(name: str) -> dict[str, Any]:
    document: dict[str, Any] = dict(BicepParser().parse(file_path=BICEP / name))
    return document


def resource(file: str, symbol: str) -> dict[str, Any]:
    config: dict[str, Any] = parsed(file)["resources"][symbol]["config"]
    return config


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(BICEP)) for p in FILES])
def test_every_bicep_file_parses(path: Path) -> None:
    assert BicepParser().parse(file_path=path)


def test_storage_is_identity_only_and_private() -> None:
    properties = resource("modules/storage.bicep", "account")["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["supportsHttpsTrafficOnly"] is True
    for container in ("rulesContainer", "deploymentContainer"):
        assert resource("modules/storage.bicep", container)["properties"]["publicAccess"] == "None"
    symbols = parsed("modules/storage.bicep")["resources"]
    assert {"alertsQueue", "poisonQueue", "ledgerTable", "syncStateTable"} <= set(symbols)


def test_key_vault_is_rbac_only_with_purge_protection() -> None:
    properties = resource("modules/keyvault.bicep", "vault")["properties"]
    assert properties["enableRbacAuthorization"] is True
    assert properties["enableSoftDelete"] is True
    assert properties["enablePurgeProtection"] is True


def test_function_app_is_flex_python_https_tls12_without_ftp() -> None:
    plan = resource("modules/app.bicep", "plan")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = resource("modules/app.bicep", "site")
    assert site["identity"]["type"] == "UserAssigned"
    assert site["properties"]["httpsOnly"] is True
    assert site["properties"]["functionAppConfig"]["runtime"] == {"name": "python", "version": "3.11"}
    assert site["properties"]["siteConfig"]["minTlsVersion"] == "1.2"
    assert "ftpsState" not in site["properties"]["siteConfig"]  # Flex refuses it; FTP is off through the policy
    for policy in ("ftp", "scm"):
        assert resource("modules/app.bicep", policy)["properties"]["allow"] is False
    assert resource("modules/monitoring.bicep", "insights")["properties"]["DisableLocalAuth"] is True


def test_no_keys_or_connection_strings_anywhere() -> None:
    key_material = re.compile(r"listKeys\(|\.(primary|secondary)(Access)?Keys?\b|AccountKey=|SharedAccessSignature=")
    for path in FILES:
        assert not key_material.search(path.read_text()), path
        for name, output in parsed(str(path.relative_to(BICEP))).get("outputs", {}).items():
            assert not key_material.search(str(output["value"])), f"{path}: output {name}"
    main_outputs = str(parsed("main.bicep")["outputs"])
    assert "connectionString" not in main_outputs and "ConnectionString" not in main_outputs
    base = parsed("modules/app.bicep")["variables"]["baseSettings"]["value"]
    credential = base["AzureWebJobsStorage__credential"]["operator"]["operands"]
    assert (credential["operand_1"], credential["operand_2"]) == ("storageIdentity", "credential")
    assert parsed("modules/app.bicep")["variables"]["storageIdentity"]["value"]["credential"] == "managedidentity"
    assert "AzureWebJobsStorage" not in base  # no connection string form


def test_every_role_assignment_is_allowed_and_scoped_to_a_resource() -> None:
    document = parsed("modules/rbac.bicep")
    roles = document["variables"]["roles"]["value"]
    assert set(roles.values()) <= ALLOWED_ROLES
    assignments = {
        s: r for s, r in document["resources"].items() if r["type"] == "Microsoft.Authorization/roleAssignments"
    }
    assert len(assignments) == 9
    declared = set(document["resources"])
    for symbol, assignment in assignments.items():
        scope = assignment["config"]["scope"]
        assert isinstance(scope, str) and scope in declared, f"{symbol} is not scoped to a declared resource"
        assert document["resources"][scope]["existing"] is True
        assert assignment["config"]["properties"]["principalType"] == "ServicePrincipal"


def _code_settings() -> tuple[set[str], set[str]]:
    """(every setting the code reads, the required ones): what the schemas declare, and the telemetry module's."""
    import shared.settings  # noqa: F401 - it imports every schema, and each declares its settings
    from shared.platform.settings import known_settings

    source = "".join(path.read_text() for path in (ROOT / "shared").glob("**/settings.py"))
    read = set(known_settings())
    required = set(re.findall(r'reader\.required\(\s*"([A-Z][A-Z0-9_]+)"', source))
    required |= set(re.findall(r'check_(?:queue_name|schedule)\(reader, "([A-Z][A-Z0-9_]+)"', source))
    required.add("SERVICENOW_CONNECTIONS")
    read |= required
    read |= set(
        re.findall(
            r'os\.environ\.get\("([A-Z][A-Z0-9_]+)"', (ROOT / "shared" / "platform" / "telemetry.py").read_text()
        )
    )
    return read, required


def _bicep_settings() -> set[str]:
    app = parsed("main.bicep")["modules"]["app"]["config"]["params"]["appSettings"]
    base = parsed("modules/app.bicep")["variables"]["baseSettings"]["value"]
    return set(app) | set(base)


# Settings the host or the Python worker reads, not the code: each with why it is deployed.
WORKER_OWNED = {
    "PYTHON_ENABLE_OPENTELEMETRY": "the worker's OpenTelemetry capability: the host stops forwarding its log records",
    "PYTHON_AZURE_MONITOR_LOGGER_NAME": "the logger the worker's distro exports: the app's, as telemetry.configure()",
}


def test_no_drift_between_the_code_and_the_deployment() -> None:
    read, required = _code_settings()
    provided = _bicep_settings()
    host_owned = {
        s
        for s in provided
        if s.startswith(("AzureWebJobsStorage__", "ALERTS_STORAGE__", "AzureFunctionsJobHost__", "PYTHON_THREADPOOL_"))
    } | (provided & set(WORKER_OWNED))
    # A host.json override names a key host.json has (the queue settings the ServiceNow budget derives).
    host_json = json.loads((ROOT / "host.json").read_text())
    for setting in sorted(s for s in host_owned if s.startswith("AzureFunctionsJobHost__")):
        node = host_json
        for key in setting.split("__")[1:]:
            assert isinstance(node, dict) and key in node, f"{setting}: host.json has no {key}"
            node = node[key]
    # Every required setting is deployed (the storage connection in its identity-based form).
    assert "ALERTS_STORAGE__queueServiceUri" in provided
    assert required - {"ALERTS_STORAGE"} <= provided
    # Every deployed setting is one the code (or the host, for its own storage) reads.
    assert provided - host_owned <= read, sorted(provided - host_owned - read)
    # What the code reads but Bicep leaves out is local-only (the emulators' private CA), and the storage
    # connection's string form (deployed in its identity-based form).
    assert read - provided == {"KEY_VAULT_CA_BUNDLE", "ALERTS_STORAGE"}


@pytest.mark.slow
def test_a_checkov_check_that_crashes_fails_infra_check(tmp_path: Path) -> None:
    """checkov logs a crashed check and still reports 0 failures; `make infra-check` must not pass then."""
    if not (ROOT / ".venv-checkov" / "bin" / "checkov").exists():
        pytest.fail("checkov is not installed: `make test` installs it (make infra-check) before the suite")
    shutil.copy(BICEP / "modules" / "keyvault.bicep", tmp_path)  # its conditional crashes CKV_AZURE_189
    crashed = subprocess.run(  # noqa: S603
        ["make", "-s", "infra-check", f"INFRA_DIR={tmp_path}", "CHECKOV_SKIP="],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert crashed.returncode != 0
    assert "a checkov check crashed" in crashed.stderr


def test_azd_asks_for_what_has_no_default_and_never_deploys_the_example() -> None:
    import json

    parameters = json.loads((BICEP / "main.parameters.json").read_text())["parameters"]
    declared = set(parsed("main.bicep")["parameters"])
    assert set(parameters) <= declared  # every mapped parameter exists
    assert "serviceNowConnections" not in parameters  # required without a default: azd asks for it
    assert not (BICEP / "main.bicepparam").exists()  # azd would deploy a main.bicepparam as it is
    hooks = (ROOT / "azure.yaml").read_text()
    assert "postprovision" in hooks and "./infra/hooks/preprovision.sh" in hooks


def test_the_deploy_script_refuses_the_worked_examples_placeholders() -> None:
    scripts = [ROOT / "infra" / "deploy.sh", ROOT / "infra" / "grant-defender-reader.sh"]
    for script in [*scripts, *sorted((ROOT / "infra" / "hooks").glob("*.sh"))]:
        assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0, script  # noqa: S603, S607
    done = subprocess.run(  # noqa: S603
        ["sh", str(ROOT / "infra" / "deploy.sh"), "rg", "westeurope", str(BICEP / "main.example.bicepparam")],  # noqa: S607
        check=False,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},  # no az: the check comes before any Azure call
    )
    assert done.returncode == 2 and "still holds the worked example's placeholders" in done.stderr


def test_the_deployer_gets_exactly_the_roles_of_the_steps_after_deployment() -> None:
    document = parsed("modules/deployer.bicep")
    roles = document["variables"]["roles"]["value"]
    assert set(roles.values()) == {
        "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",  # Key Vault Secrets Officer: the client secret, connect's tokens
        "ba92f5b4-2d11-453d-a403-e96b0029c9fe",  # Storage Blob Data Contributor: rules apply
        "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a",  # Storage Queue Data Message Sender: enqueue, verify, replay
        "19e7f393-937e-4f77-808e-94535e297925",  # Storage Queue Data Reader: verify
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88",  # Storage Queue Data Contributor: poison list and replay
        "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",  # Storage Table Data Contributor: sync and writeback run/status
    }
    assignments = [r for r in document["resources"].values() if r["type"] == "Microsoft.Authorization/roleAssignments"]
    configs = [r["config"].get("config", r["config"]) for r in assignments]  # a loop nests its body
    assert len(configs) == 6 and all("scope" in c for c in configs)  # on a resource, never the group


def test_the_az_path_passes_who_deploys_and_checks_first() -> None:
    """deploy.sh names the deployer's principal type (a pipeline's service principal is no User), and runs the
    pre-deployment checks before its first Azure change."""
    script = (ROOT / "infra" / "deploy.sh").read_text()
    assert 'deployerPrincipalType="$kind"' in script
    assert script.index("tools.deploy.before_provision") < script.index("az group create")
    assert "az ad signed-in-user" not in script  # a service principal has no signed-in user


def test_logs_are_sent_once_the_host_and_the_worker_agree_on_the_opentelemetry_mode() -> None:
    """host.json's telemetryMode and the worker's capability go together (learn: azure-functions
    opentelemetry-howto; Azure/azure-functions-python-worker constants.py, dispatcher.py): with only the first,
    the host still writes every record the worker forwards, and the app's distro sends it again."""
    host_json = json.loads((ROOT / "host.json").read_text())
    settings = app_settings()
    assert host_json.get("telemetryMode") == "OpenTelemetry"
    assert settings["PYTHON_ENABLE_OPENTELEMETRY"] == "true"
    # The worker's distro exports the logger telemetry.configure() would have, with the identity (no key).
    configured = re.search(r'"logger_name": "(\w+)"', (ROOT / "shared" / "platform" / "telemetry.py").read_text())
    assert configured is not None and settings["PYTHON_AZURE_MONITOR_LOGGER_NAME"] == configured.group(1)
    assert "Authorization=AAD" in str(settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"])
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in settings


def app_settings() -> dict[str, Any]:
    app = Deployment(BICEP / "main.bicep", {"serviceNowConnections": "[]", "name": "dfiot"}).module("app")
    assert app is not None
    site = next(r for r in app.resources() if r.type == "Microsoft.Web/sites")
    return {entry["name"]: entry["value"] for entry in site.value("properties")["siteConfig"]["appSettings"]}
