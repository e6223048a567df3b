"""What Azure refuses, encoded: the templates evaluated (tools/bicep.py) against Azure's published rules.

The local stack has no Bicep compiler and no Azure Resource Manager, so nothing else can catch a name Azure
refuses, a window the alert service refuses, or a property Flex Consumption refuses. Each rule names its
source; docs/platform-checks.md lists them all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tools.bicep import Deployment, Unknown, conditionals_inside_expressions

BICEP = ROOT / "infra" / "bicep"
MAIN = BICEP / "main.bicep"
REQUIRED = {"serviceNowConnections": '[{"name": "default"}]'}


@dataclass(frozen=True)
class NameRule:
    pattern: str
    low: int
    high: int

    def refuses(self, name: str) -> str | None:
        if not self.low <= len(name) <= self.high:
            return f"{len(name)} characters, not {self.low}-{self.high}"
        if not re.fullmatch(self.pattern, name):
            return f"does not match {self.pattern}"
        return None


# Azure's naming rules per resource type (learn: azure-resource-manager/management/resource-name-rules),
# for the last segment of the name; a child's full name is checked segment by segment.
ALNUM_DASH = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
NETWORK = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?"
NAME_RULES: dict[str, NameRule] = {
    "Microsoft.Storage/storageAccounts": NameRule(r"[a-z0-9]+", 3, 24),
    "Microsoft.Storage/storageAccounts/blobServices": NameRule(r"default", 7, 7),
    "Microsoft.Storage/storageAccounts/queueServices": NameRule(r"default", 7, 7),
    "Microsoft.Storage/storageAccounts/tableServices": NameRule(r"default", 7, 7),
    "Microsoft.Storage/storageAccounts/blobServices/containers": NameRule(r"(?!.*--)[a-z0-9][a-z0-9-]*[a-z0-9]", 3, 63),
    "Microsoft.Storage/storageAccounts/queueServices/queues": NameRule(r"(?!.*--)[a-z0-9][a-z0-9-]*[a-z0-9]", 3, 63),
    "Microsoft.Storage/storageAccounts/tableServices/tables": NameRule(r"[A-Za-z][A-Za-z0-9]*", 3, 63),
    "Microsoft.KeyVault/vaults": NameRule(r"(?!.*--)[A-Za-z][A-Za-z0-9-]*[A-Za-z0-9]", 3, 24),
    "Microsoft.KeyVault/vaults/secrets": NameRule(r"[A-Za-z0-9-]+", 1, 127),
    "Microsoft.Web/serverfarms": NameRule(ALNUM_DASH, 1, 60),
    # Sites: 2-60; the host id is the name's first 32 characters, so longer names could collide (kept ≤ 32).
    "Microsoft.Web/sites": NameRule(ALNUM_DASH, 2, 32),
    "Microsoft.Web/sites/basicPublishingCredentialsPolicies": NameRule(r"ftp|scm", 3, 3),
    "Microsoft.ManagedIdentity/userAssignedIdentities": NameRule(r"[A-Za-z0-9][A-Za-z0-9_-]*", 3, 128),
    "Microsoft.OperationalInsights/workspaces": NameRule(ALNUM_DASH, 4, 63),
    "Microsoft.Insights/components": NameRule(r"[^%&\\?/\x00-\x1f]*[^%&\\?/\x00-\x1f .]", 1, 260),
    "Microsoft.Insights/workbooks": NameRule(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", 36, 36),
    "Microsoft.Insights/scheduledQueryRules": NameRule(
        r"[^*#&+:<>?@%{}\\/\x00-\x1f]*[^*#&+:<>?@%{}\\/\x00-\x1f .]", 1, 260
    ),
    "Microsoft.Network/virtualNetworks": NameRule(NETWORK, 2, 64),
    "Microsoft.Network/routeTables": NameRule(NETWORK, 1, 80),
    "Microsoft.Network/privateEndpoints": NameRule(NETWORK, 2, 64),
    "Microsoft.Network/privateEndpoints/privateDnsZoneGroups": NameRule(NETWORK, 1, 80),
    "Microsoft.Network/privateDnsZones": NameRule(r"[a-z0-9.-]+", 1, 253),
    "Microsoft.Network/privateDnsZones/virtualNetworkLinks": NameRule(NETWORK, 1, 80),
}
# azd accepts environment names matching ^[a-zA-Z0-9-\(\)_\.]{1,64}$ (Azure/azure-dev, pkg/environment).
ENVIRONMENT_NAMES = ["dfiot-dev", "DfIot", "a", "x" * 64, "Plant_A.(prod)-2", "---", "7" * 64]
EVERYTHING_ON = {
    "networkIsolation": True,
    "sensorNetworkPrefixes": ["10.1.4.0/24"],
    "sensorNextHopIp": "10.0.0.4",
    "deviceSyncEnabled": True,
    "deployerPrincipalId": "11111111-1111-1111-1111-111111111111",
    "sensorApiTokens": {"line-4": "token"},
}


def deployed(**parameters: Any) -> Deployment:
    return Deployment(MAIN, {**REQUIRED, **parameters})


def test_azd_environment_names_in_the_test_are_ones_azd_accepts() -> None:
    assert all(re.fullmatch(r"[a-zA-Z0-9\-()_.]{1,64}", name) for name in ENVIRONMENT_NAMES)


@pytest.mark.parametrize("environment", ENVIRONMENT_NAMES)
def test_every_resource_name_is_one_azure_accepts_for_any_environment_name(environment: str) -> None:
    deployment = deployed(name=environment, **EVERYTHING_ON)
    checked = 0
    for resource in deployment.all_resources():
        if resource.type == "Microsoft.Authorization/roleAssignments":
            continue  # a guid() of the scope, the principal and the role: always a valid name
        assert not isinstance(resource.name, Unknown), f"{resource.symbol}: name only known at deployment"
        rule = NAME_RULES.get(resource.type)
        assert rule is not None, f"{resource.type}: add its naming rule (resource-name-rules) to NAME_RULES"
        segment = str(resource.name).rsplit("/", 1)[-1]
        problem = rule.refuses(segment)
        assert problem is None, f"{environment!r}: {resource.type} name {segment!r}: {problem}"
        checked += 1
    assert checked >= 30  # every resource of the full deployment (network, deployer roles, sensor tokens)


def test_names_stay_apart_for_different_environments() -> None:
    """Two environments in one resource group never share a globally unique name."""
    names = set()
    for environment in ("dfiot-dev", "dfiotdev", "DfIot-Dev"):
        deployment = deployed(name=environment)
        names.add(deployment.module("storage").parameters["name"])  # type: ignore[union-attr]
    assert len(names) == 3


# The alert service's accepted windows, "even when the rule is disabled" (its error message, quoted in
# Azure/azure-rest-api-specs#21258); evaluation frequencies it accepts, in minutes.
WINDOWS = {"PT5M": 5, "PT10M": 10, "PT15M": 15, "PT30M": 30, "PT45M": 45, "PT1H": 60, "PT2H": 120}
WINDOWS |= {"PT3H": 180, "PT4H": 240, "PT5H": 300, "PT6H": 360, "P1D": 1440, "P2D": 2880}
FREQUENCIES = {"PT1M": 1, "PT5M": 5, "PT10M": 10, "PT15M": 15, "PT30M": 30, "PT45M": 45, "PT1H": 60}


def test_every_alert_rule_has_a_window_and_frequency_the_service_accepts_for_every_sync_frequency() -> None:
    declaration = deployed(name="x").document["parameters"]["deviceSyncFrequencyMinutes"]
    bounds = {d["type"]: d["argument"] for d in declaration["decorators"]}
    for frequency in range(bounds["min_value"], bounds["max_value"] + 1):
        alerts = Deployment(
            BICEP / "modules" / "alerts.bicep",
            {
                "name": "x",
                "location": "westeurope",
                "tags": {},
                "applicationInsightsId": "/id",
                "actionGroupId": "",
                "deviceSyncEnabled": False,  # validated even when disabled
                "deviceSyncFrequencyMinutes": frequency,
                "deferredThreshold": 100,
                "refreshTokenWarningDays": 14,
                "authFailureThreshold": 5,
            },
        )
        for rule in alerts.resources():
            properties = rule.value("properties")
            window, every = properties["windowSize"], properties["evaluationFrequency"]
            assert window in WINDOWS, f"sync every {frequency} min: {rule.name} window {window}"
            assert every in FREQUENCIES, f"sync every {frequency} min: {rule.name} frequency {every}"
            assert FREQUENCIES[every] <= WINDOWS[window], f"{rule.name}: frequency {every} > window {window}"
            if rule.name.endswith("stale-sync"):
                assert WINDOWS[window] >= 2 * frequency, f"sync every {frequency} min: window {window} too short"


# Flex Consumption refuses these site properties and app settings (learn: azure-functions
# flex-consumption-plan, "Considerations" and its migration guide's list of unsupported properties; the
# ftpsState refusal reported in microsoft/azure-pipelines-tasks#21032).
FLEX_REFUSED_SITE_CONFIG = {
    "ftpsState",
    "alwaysOn",
    "linuxFxVersion",
    "functionAppScaleLimit",
    "preWarmedInstanceCount",
    "use32BitWorkerProcess",
    "javaVersion",
    "pythonVersion",
    "netFrameworkVersion",
    "powerShellVersion",
}
FLEX_REFUSED_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "SCALE_CONTROLLER_LOGGING_ENABLED",
}


def site(**parameters: Any) -> Any:
    app = deployed(name="dfiot", **parameters).module("app")
    assert app is not None
    return next(r for r in app.resources() if r.type == "Microsoft.Web/sites")


@pytest.mark.parametrize("options", [{}, EVERYTHING_ON], ids=["defaults", "everything-on"])
def test_the_site_sets_nothing_flex_consumption_refuses(options: dict[str, Any]) -> None:
    properties = site(**options).value("properties")
    config = properties["siteConfig"]
    assert not FLEX_REFUSED_SITE_CONFIG & set(config), sorted(FLEX_REFUSED_SITE_CONFIG & set(config))
    settings = {entry["name"] for entry in config["appSettings"]}
    assert not FLEX_REFUSED_SETTINGS & settings
    scale = properties["functionAppConfig"]["scaleAndConcurrency"]
    # "The lowest maximum scale is currently 40. The highest currently supported value is 1000" (learn:
    # flex-consumption-plan); lower values exist only in some regions.
    assert 40 <= scale["maximumInstanceCount"] <= 1000
    assert scale["instanceMemoryMB"] in (512, 2048, 4096)
    assert properties["functionAppConfig"]["runtime"]["version"] in ("3.10", "3.11", "3.12")


def test_maximum_instance_count_cannot_be_set_below_what_every_region_accepts() -> None:
    declaration = deployed(name="dfiot").document["parameters"]["maximumInstanceCount"]
    bounds = {d["type"]: d["argument"] for d in declaration["decorators"]}
    assert bounds["min_value"] >= 40 and bounds["max_value"] <= 1000


def test_the_default_storage_redundancy_deploys_in_every_region() -> None:
    """ZRS/GZRS need availability zones, GRS/GZRS a paired region; LRS exists everywhere Flex is offered."""
    storage = deployed(name="dfiot").module("storage")
    assert storage is not None
    account = next(r for r in storage.resources() if r.type == "Microsoft.Storage/storageAccounts")
    assert account.value("sku") == {"name": "Standard_LRS"}
    zoned = deployed(name="dfiot", storageSku="Standard_GZRS").module("storage")
    assert zoned is not None
    assert next(r for r in zoned.resources() if r.symbol == "account").value("sku") == {"name": "Standard_GZRS"}


def app_settings(**parameters: Any) -> dict[str, str]:
    return {
        entry["name"]: entry["value"] for entry in site(**parameters).value("properties")["siteConfig"]["appSettings"]
    }


@pytest.mark.parametrize("per_instance", [1, 4, 16])
def test_the_worker_has_a_thread_for_every_message_an_instance_holds(per_instance: int) -> None:
    """The Python worker runs sync functions on PYTHON_THREADPOOL_THREAD_COUNT threads (default min(32, cores + 4):
    5 on a one-core Flex instance); fewer than the messages held would leave them waiting inside the worker."""
    settings = app_settings(alertsPerInstance=per_instance)
    held = int(settings["AzureFunctionsJobHost__extensions__queues__batchSize"]) + int(
        settings["AzureFunctionsJobHost__extensions__queues__newBatchThreshold"]
    )
    functions = len(list((ROOT / "functions").glob("*/__init__.py")))
    assert int(settings["PYTHON_THREADPOOL_THREAD_COUNT"]) >= held + functions - 1


def test_a_sensor_route_always_has_its_next_hop() -> None:
    """A VirtualAppliance route needs nextHopIpAddress; the pre-deployment check refuses the pair earlier
    (tests/unit/test_before_provision.py), the template itself never writes an empty one."""
    network = deployed(name="dfiot", **EVERYTHING_ON).module("network")
    assert network is not None
    for routes in (r for r in network.resources() if r.type == "Microsoft.Network/routeTables"):
        for route in routes.value("properties")["routes"]:
            assert route["properties"]["nextHopType"] == "VirtualAppliance"
            assert route["properties"]["nextHopIpAddress"]


@pytest.mark.parametrize("path", sorted(BICEP.rglob("*.bicep")), ids=lambda p: str(p.relative_to(BICEP)))
def test_every_conditional_inside_an_expression_is_parenthesised(path: Path) -> None:
    """pycep reads `a && b ? c : d` as `a && (b ? c : d)`; parenthesised, the evaluator sees what Bicep does."""
    assert conditionals_inside_expressions(path) == []
