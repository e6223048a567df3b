"""Every data-plane call has its role: what the code and the Functions host do, against what the Bicep grants.

The local stack has no RBAC: Azurite and the emulators let any caller do anything, so a missing role shows
only in Azure, as a 403 (the queue trigger that cannot release a message, MicrosoftDocs/azure-docs#120932).
This test closes that gap:

1. it finds every Azure SDK call in the product (each public method of the storage, Key Vault and Resource
   Graph clients, wherever the code calls it);
2. ``WHO`` says which identity makes the calls of each module, on which resource;
3. ``OPERATIONS`` maps each call to the permission Azure checks, ``ROLES`` each built-in role to what it
   allows, both from Microsoft's documentation (sources beside them);
4. the templates are evaluated (tools/bicep.py) and each (identity, resource, permission) must be covered by a
   role assignment to that identity on a scope that contains the resource.

A new SDK call fails here until it is mapped, and a mapped call fails until its role is granted.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections import defaultdict
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from azure.data.tables import TableClient, TableServiceClient
from azure.keyvault.secrets import SecretClient
from azure.mgmt.resourcegraph import ResourceGraphClient
from azure.storage.blob import BlobClient, BlobLeaseClient, BlobServiceClient, ContainerClient
from azure.storage.queue import QueueClient, QueueServiceClient

from tests.conftest import ROOT
from tools.bicep import Deployment, Resource, Unknown

BICEP = ROOT / "infra" / "bicep"
SDK_CLIENTS = (
    QueueClient,
    QueueServiceClient,
    BlobClient,
    ContainerClient,
    BlobServiceClient,
    BlobLeaseClient,
    TableClient,
    TableServiceClient,
    SecretClient,
    ResourceGraphClient,
)
STORAGE = "Microsoft.Storage/storageAccounts"
QUEUES = f"{STORAGE}/queueServices/queues"
BLOBS = f"{STORAGE}/blobServices/containers"
TABLES = f"{STORAGE}/tableServices/tables"
SECRETS = "Microsoft.KeyVault/vaults/secrets"


@dataclass(frozen=True)
class Permission:
    """One of ``any_of`` allows the call; a data action is never satisfied by an action, or the reverse."""

    kind: str  # queue | blob | table | vault | subscription
    any_of: tuple[str, ...]
    data: bool = True


def data(kind: str, *names: str) -> Permission:
    return Permission(kind, names)


def action(kind: str, *names: str) -> Permission:
    return Permission(kind, names, data=False)


# Each SDK call → the permission Azure checks. Sources: the REST operations' "Authorization" sections
# (learn: rest/api/storageservices), the storage role-condition pages that name each operation's data action
# (learn: storage/queues/queues-auth-abac-attributes, storage/blobs/storage-auth-abac-attributes), the
# permission lists (learn: role-based-access-control/permissions/storage, …/security for Key Vault,
# …/management-and-governance for Resource Graph).
OPERATIONS: dict[str, Permission] = {
    # Queues: "Put a message" add/action, "Put or update a message" write, "Get or delete messages" process.
    "create_queue": action("queue", f"{QUEUES}/write"),
    "delete_queue": action("queue", f"{QUEUES}/delete"),
    "get_queue_properties": action("queue", f"{QUEUES}/read"),
    "set_queue_metadata": action("queue", f"{QUEUES}/write"),
    "send_message": data("queue", f"{QUEUES}/messages/add/action", f"{QUEUES}/messages/write"),
    "receive_message": data("queue", f"{QUEUES}/messages/process/action"),
    "receive_messages": data("queue", f"{QUEUES}/messages/process/action"),
    "peek_messages": data("queue", f"{QUEUES}/messages/read"),
    "delete_message": data("queue", f"{QUEUES}/messages/process/action", f"{QUEUES}/messages/delete"),
    "update_message": data("queue", f"{QUEUES}/messages/write"),
    "clear_messages": data("queue", f"{QUEUES}/messages/delete"),
    # Blobs.
    "create_container": action("blob", f"{BLOBS}/write"),
    "get_container_properties": action("blob", f"{BLOBS}/read"),
    "list_blobs": data("blob", f"{BLOBS}/blobs/read"),
    "upload_blob": data("blob", f"{BLOBS}/blobs/write"),
    "download_blob": data("blob", f"{BLOBS}/blobs/read"),
    "get_blob_properties": data("blob", f"{BLOBS}/blobs/read"),
    "delete_blob": data("blob", f"{BLOBS}/blobs/delete"),
    "acquire_lease": data("blob", f"{BLOBS}/blobs/write"),
    "renew_lease": data("blob", f"{BLOBS}/blobs/write"),
    # Tables: "Insert table entities" add/action, "Merge or update" update/action, "Insert, merge, or
    # replace" write (an upsert may do either).
    "create_table": action("table", f"{TABLES}/write"),
    "query_entities": data("table", f"{TABLES}/entities/read"),
    "list_entities": data("table", f"{TABLES}/entities/read"),
    "get_entity": data("table", f"{TABLES}/entities/read"),
    "create_entity": data("table", f"{TABLES}/entities/add/action", f"{TABLES}/entities/write"),
    "update_entity": data("table", f"{TABLES}/entities/update/action", f"{TABLES}/entities/write"),
    "upsert_entity": data("table", f"{TABLES}/entities/write"),
    "delete_entity": data("table", f"{TABLES}/entities/delete"),
    # A transaction needs the permission of each operation in it: inserts, updates and deletes here.
    "submit_transaction": data("table", f"{TABLES}/entities/write"),
    # Key Vault.
    "get_secret": data("vault", f"{SECRETS}/getSecret/action"),
    "set_secret": data("vault", f"{SECRETS}/setSecret/action"),
    "list_properties_of_secret_versions": data("vault", f"{SECRETS}/readMetadata/action"),
    # Resource Graph: the query, answered with what the caller may read (learn: governance/resource-graph,
    # "Permissions in Azure Resource Graph"); the product queries Defender for IoT's resources only.
    "resources": action("subscription", "Microsoft.ResourceGraph/resources/read", "Microsoft.IoTSecurity/*/read"),
}
# Two calls that need both of their permissions, not one of them.
ALL_OF = {"resources"}
# The ARM write-back the product makes with requests, not an SDK client (spec operation IotAlerts_Patch).
HTTP_OPERATIONS = {
    "shared/defender/writeback.py": [
        ("app", "subscription", action("subscription", "Microsoft.IoTSecurity/locations/deviceGroups/alerts/write"))
    ],
}
# SDK names that make no call to Azure, or that the product uses for its own objects: the ServiceNow budget's
# semaphore has acquire/release, like a blob lease (the product takes no lease; the host's are in HOST).
NOT_OPERATIONS = {
    "close",
    "get_queue_client",
    "get_table_client",
    "get_blob_client",
    "get_container_client",
    "from_connection_string",
    "acquire",
    "release",
}
# Calls that may be refused without harm: the deployment creates what they create.
TOLERATED = {
    ("shared/platform/storage.py", "create_table"): "the deployment creates every table; 403 is taken as 'exists'",
    ("shared/alerting/deferral.py", "create_queue"): "only when the deployment's poison queue is gone (404)",
}

# Who makes each module's calls, on what. Identities: the app's managed identity (functions and the host),
# the deployer (the README's operator commands, with deployerPrincipalId's roles) and the relay's service
# principal (docs/relay.md). A third element limits an entry to those calls (the deployer only reads some).
READS = frozenset({"query_entities", "get_entity", "list_entities"})
WHO: dict[str, list[tuple[str, str] | tuple[str, str, frozenset[str]]]] = {
    "shared/alerting/enqueue.py": [("app", "queue:alerts"), ("deployer", "queue:alerts"), ("relay", "queue:alerts")],
    "shared/alerting/deferral.py": [("app", "queue:alerts"), ("app", "queue:poison")],
    "shared/alerting/groups.py": [("app", "table:ledger")],
    "shared/alerting/intake.py": [("app", "table:intake"), ("deployer", "table:intake", READS)],  # status
    "shared/alerting/ledger.py": [("app", "table:ledger"), ("deployer", "table:ledger")],  # writeback run
    "shared/alerting/queue_depth.py": [
        ("app", "queue:alerts", frozenset({"get_queue_properties", "peek_messages"})),
        ("app", "queue:poison", frozenset({"get_queue_properties"})),
    ],
    "shared/alerting/poison.py": [
        ("deployer", "queue:poison"),
        ("deployer", "queue:alerts", frozenset({"send_message"})),
    ],
    "shared/alerting/rules_store.py": [
        ("app", "container:rules", frozenset({"download_blob", "get_blob_properties"})),
        ("deployer", "container:rules"),
    ],
    "shared/alerting/writeback.py": [("app", "table:intake"), ("deployer", "table:intake")],
    "shared/app/verify.py": [
        ("deployer", "queue:alerts"),
        ("deployer", "queue:poison"),
        ("deployer", "table:ledger"),
        ("deployer", "table:intake"),
        ("deployer", "table:sync"),
    ],
    "shared/devices/state.py": [("app", "table:sync"), ("deployer", "table:sync")],  # sync run / sync status
    "shared/app/status/forwarding.py": [("deployer", "queue:alerts"), ("deployer", "queue:poison")],
    # the asset index lives in the sync's table: the sync (timer or `sync run`) writes it, the forwarder reads it
    "shared/assets/index.py": [("app", "table:sync"), ("deployer", "table:sync")],
    # the device sync's state and the asset index, written in transactions (both in the sync state table)
    "shared/platform/table_batches.py": [("app", "table:sync"), ("deployer", "table:sync")],
    "shared/platform/budget_board.py": [
        ("app", "table:ledger"),
        ("deployer", "table:ledger", frozenset({"query_entities"})),  # status reads the board
    ],
    "shared/platform/secrets.py": [("app", "vault"), ("deployer", "vault")],
    "shared/platform/storage.py": [
        *[("app", table) for table in ("table:ledger", "table:sync", "table:intake")],
        *[("deployer", table) for table in ("table:ledger", "table:sync", "table:intake")],
    ],
    # The deployer's `sync run` and `writeback run` reach Defender with its own Azure rights (an Owner has them).
    "shared/defender/cloud.py": [("app", "subscription")],
}
# What the Functions host does with the app's identity, besides the app's own calls. Sources: the queue
# extension (Azure/azure-sdk-for-net sdk/storage/Microsoft.Azure.WebJobs.Extensions.Storage.Queues:
# QueueListener.cs, QueueProcessor.cs, QueueMetricsProvider.cs), the timer extension's status blobs and
# listener locks (Azure/azure-webjobs-sdk-extensions Timers/), host storage (learn: azure-functions
# functions-reference, "Connecting to host storage with an identity": "the runtime needs both read and write
# access to blobs and the ability to create containers"), Flex's deployment package (learn: flex-consumption-how-to).
HOST = [
    ("get_queue_properties", "queue:alerts"),  # the listener checks the queue; the scaler reads its length
    ("peek_messages", "queue:alerts"),  # the scaler's oldest-message age
    ("receive_messages", "queue:alerts"),
    ("delete_message", "queue:alerts"),
    ("update_message", "queue:alerts"),  # a failed message released after visibilityTimeout; renewal at 5 min
    ("send_message", "queue:poison"),  # maxDequeueCount reached (the deployment creates the poison queue)
    ("create_container", "container:hosts"),
    ("upload_blob", "container:hosts"),  # timer status blobs
    ("download_blob", "container:hosts"),
    ("acquire_lease", "container:hosts"),  # singleton listener locks
    ("renew_lease", "container:hosts"),
    ("create_container", "container:secrets"),  # the host's key store
    ("upload_blob", "container:secrets"),
    ("download_blob", "container:secrets"),
    ("download_blob", "container:package"),  # Flex's deployment package
]


@dataclass(frozen=True)
class Role:
    name: str
    actions: tuple[str, ...]
    data_actions: tuple[str, ...] = ()


# Built-in roles (learn: role-based-access-control/built-in-roles/storage, …/security, …/monitor).
ROLES: dict[str, Role] = {
    "19e7f393-937e-4f77-808e-94535e297925": Role(
        "Storage Queue Data Reader", (f"{QUEUES}/read",), (f"{QUEUES}/messages/read",)
    ),
    "8a0f0c08-91a1-4084-bc3d-661d67233fed": Role(
        "Storage Queue Data Message Processor", (), (f"{QUEUES}/messages/read", f"{QUEUES}/messages/process/action")
    ),
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": Role(
        "Storage Queue Data Message Sender", (), (f"{QUEUES}/messages/add/action",)
    ),
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": Role(
        "Storage Queue Data Contributor",
        (f"{QUEUES}/delete", f"{QUEUES}/read", f"{QUEUES}/write"),
        (
            f"{QUEUES}/messages/delete",
            f"{QUEUES}/messages/read",
            f"{QUEUES}/messages/write",
            f"{QUEUES}/messages/process/action",
        ),
    ),
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": Role(
        "Storage Blob Data Owner",
        (f"{BLOBS}/*", f"{STORAGE}/blobServices/generateUserDelegationKey/action"),
        (f"{BLOBS}/blobs/*",),
    ),
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": Role(
        "Storage Blob Data Contributor",
        (
            f"{BLOBS}/delete",
            f"{BLOBS}/read",
            f"{BLOBS}/write",
            f"{STORAGE}/blobServices/generateUserDelegationKey/action",
        ),
        (
            f"{BLOBS}/blobs/delete",
            f"{BLOBS}/blobs/read",
            f"{BLOBS}/blobs/write",
            f"{BLOBS}/blobs/move/action",
            f"{BLOBS}/blobs/add/action",
        ),
    ),
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": Role(
        "Storage Table Data Contributor",
        (f"{TABLES}/read", f"{TABLES}/write", f"{TABLES}/delete"),
        (
            f"{TABLES}/entities/read",
            f"{TABLES}/entities/write",
            f"{TABLES}/entities/delete",
            f"{TABLES}/entities/add/action",
            f"{TABLES}/entities/update/action",
        ),
    ),
    "76199698-9eea-4c19-bc75-cec21354c6b6": Role(
        "Storage Table Data Reader", (f"{TABLES}/read",), (f"{TABLES}/entities/read",)
    ),
    "4633458b-17de-408a-b874-0445c86b69e6": Role(
        "Key Vault Secrets User", (), (f"{SECRETS}/getSecret/action", f"{SECRETS}/readMetadata/action")
    ),
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": Role(
        "Key Vault Secrets Officer", ("Microsoft.KeyVault/vaults/*/read",), (f"{SECRETS}/*",)
    ),
    "3913510d-42f4-4e42-8a64-420c390055eb": Role(
        "Monitoring Metrics Publisher", ("Microsoft.Insights/Register/Action",), ("Microsoft.Insights/Telemetry/Write",)
    ),
}
RELAY_ROLE = "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a"  # docs/relay.md: Sender on the alerts queue only


# -- what the code calls ---------------------------------------------------------------------
def sdk_methods() -> set[str]:
    return {name for client in SDK_CLIENTS for name, _ in inspect.getmembers(client) if not name.startswith("_")}


def product_files() -> list[Path]:
    return sorted([*ROOT.glob("shared/**/*.py"), *ROOT.glob("functions/**/*.py"), ROOT / "function_app.py"])


def calls() -> dict[str, set[str]]:
    """Module (relative path) → the SDK method names it calls."""
    methods = sdk_methods()
    found: dict[str, set[str]] = defaultdict(set)
    for path in product_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in methods:
                found[str(path.relative_to(ROOT))].add(node.func.attr)
    return found


# -- what the templates grant ----------------------------------------------------------------
@dataclass(frozen=True)
class Grant:
    identity: str
    scope: str
    role: Role


PRINCIPALS = {"app-principal": "app", "deployer-principal": "deployer"}


def deployment() -> Deployment:
    return Deployment(
        BICEP / "main.bicep",
        {
            "name": "dfiot",
            "serviceNowConnections": "[]",
            "deployerPrincipalId": "deployer-principal",
            "deployerPrincipalType": "ServicePrincipal",
        },
    )


def principal(value: Any) -> str:
    if isinstance(value, Unknown) and value.text == "identity.properties.principalId":
        return "app"
    if value in PRINCIPALS:
        return PRINCIPALS[value]
    raise AssertionError(f"a role assignment to an unknown principal: {value}")


def custom_roles(deployment: Deployment) -> dict[str, Role]:
    roles = {}
    for resource in deployment.resources():
        if resource.type == "Microsoft.Authorization/roleDefinitions":
            permissions = resource.value("properties")["permissions"]
            roles[resource.id] = Role(
                resource.value("properties")["roleName"],
                tuple(a for p in permissions for a in p.get("actions", [])),
                tuple(a for p in permissions for a in p.get("dataActions", [])),
            )
    return roles


def grants_of(deployment: Deployment, custom: dict[str, Role]) -> list[Grant]:
    found = []
    for resource in deployment.all_resources():
        if resource.type != "Microsoft.Authorization/roleAssignments":
            continue
        properties = resource.value("properties")
        definition = properties["roleDefinitionId"]
        role = custom.get(definition) or ROLES.get(str(definition).rsplit("/", 1)[-1])
        assert role is not None, f"{resource.symbol}: role {definition} is not in ROLES (add it, with its source)"
        scope = resource.value("scope")
        scope_id = (
            scope.id if isinstance(scope, Resource) else f"/subscriptions/{'0' * 8}"
        )  # no scope: the deployment's
        found.append(Grant(principal(properties["principalId"]), scope_id, role))
    return found


def all_grants() -> list[Grant]:
    grants = grants_of(deployment(), {})
    reader = Deployment(BICEP / "defender-reader.bicep", {"principalId": "app-principal", "writeBack": True})
    subscription = "/subscriptions/" + "0" * 8
    grants += [Grant(g.identity, subscription, g.role) for g in grants_of(reader, custom_roles(reader))]
    relay = (ROOT / "docs" / "relay.md").read_text()
    assert re.search(r'--role "Storage Queue Data Message Sender".*\n.*/queueServices/default/queues/alerts"', relay)
    grants.append(Grant("relay", resource_ids()["queue:alerts"], ROLES[RELAY_ROLE]))
    return grants


def resource_ids() -> dict[str, str]:
    resources = {r.type + ":" + str(r.name).rsplit("/", 1)[-1]: r for r in deployment().all_resources()}
    account = next(r for r in deployment().all_resources() if r.type == STORAGE).id
    return {
        "queue:alerts": resources[f"{QUEUES}:alerts"].id,
        "queue:poison": resources[f"{QUEUES}:alerts-poison"].id,
        "table:ledger": resources[f"{TABLES}:forwardedalerts"].id,
        "table:sync": resources[f"{TABLES}:devicesync"].id,
        "table:intake": resources[f"{TABLES}:alertintake"].id,
        "container:rules": resources[f"{BLOBS}:rules"].id,
        "container:package": resources[f"{BLOBS}:app-package"].id,
        # Created by the host itself (learn: functions-reference, host storage).
        "container:hosts": f"{account}/blobServices/default/containers/azure-webjobs-hosts",
        "container:secrets": f"{account}/blobServices/default/containers/azure-webjobs-secrets",
        "vault": next(r for r in deployment().all_resources() if r.type == "Microsoft.KeyVault/vaults").id,
        "subscription": "/subscriptions/" + "0" * 8,
    }


def allows(role: Role, permission: str, is_data: bool) -> bool:
    patterns = role.data_actions if is_data else role.actions
    return any(fnmatchcase(permission.lower(), pattern.lower()) for pattern in patterns)


def covers(scope: str, resource: str) -> bool:
    return resource.lower() == scope.lower() or resource.lower().startswith(scope.lower().rstrip("/") + "/")


def granted(grants: list[Grant], identity: str, resource: str, permission: Permission, every: bool) -> bool:
    mine = [g for g in grants if g.identity == identity and covers(g.scope, resource)]

    def one(name: str) -> bool:
        return any(allows(g.role, name, permission.data) for g in mine)

    return all(map(one, permission.any_of)) if every else any(map(one, permission.any_of))


# -- the checks ------------------------------------------------------------------------------
KIND = {"queue": "queue", "table": "table", "container": "blob", "vault": "vault", "subscription": "subscription"}


def needed() -> list[tuple[str, str, str, str]]:
    """(where, identity, resource, call) for every call the product and the host make."""
    rows = []
    for module, methods in calls().items():
        operations = methods - NOT_OPERATIONS
        if not operations:
            continue
        assert module in WHO, f"{module} calls {sorted(operations)}: say in WHO who calls them, on what"
        claimed: set[str] = set()
        for entry in WHO[module]:
            identity, resource = entry[0], entry[1]
            subset: frozenset[str] | None = entry[2] if len(entry) == 3 else None
            for method in sorted(operations if subset is None else operations & subset):
                assert method in OPERATIONS, f"{module}: {method}() — add its permission to OPERATIONS, with the source"
                if KIND[resource.split(":")[0]] != OPERATIONS[method].kind:
                    continue
                claimed.add(method)
                if (module, method) not in TOLERATED:
                    rows.append((module, identity, resource, method))
        assert operations <= claimed, f"{module}: no identity in WHO makes {sorted(operations - claimed)}"
    rows += [("the Functions host", "app", resource, method) for method, resource in HOST]
    return rows


def test_every_call_the_product_makes_is_mapped_to_who_makes_it() -> None:
    rows = needed()
    assert len(rows) > 40
    assert {identity for _, identity, _, _ in rows} == {"app", "deployer", "relay"}


def test_every_identity_holds_a_role_for_every_call_it_makes() -> None:
    grants, ids = all_grants(), resource_ids()
    missing = [
        f"{identity} cannot {method}() on {resource} ({where}): needs {' or '.join(OPERATIONS[method].any_of)}"
        for where, identity, resource, method in needed()
        if not granted(grants, identity, ids[resource], OPERATIONS[method], method in ALL_OF)
    ]
    for module, entries in HTTP_OPERATIONS.items():
        for identity, resource, permission in entries:
            if not granted(grants, identity, ids[resource], permission, True):
                missing.append(f"{identity} cannot PATCH a Defender alert ({module}): {permission.any_of}")
    assert missing == []


def test_the_http_operations_are_where_the_code_makes_them() -> None:
    """The ARM write-back is a requests PATCH, not an SDK call: the scan cannot see it, so its place is pinned."""
    source = (ROOT / "shared" / "defender" / "writeback.py").read_text()
    assert '"PATCH"' in source or ".patch(" in source


@pytest.mark.parametrize(
    ("identity", "resource", "method"),
    [
        ("app", "queue:alerts", "update_message"),  # the host releasing a failed alert (issue: 403 in Azure)
        ("deployer", "queue:poison", "receive_messages"),  # poison list
        ("deployer", "queue:poison", "update_message"),
        ("deployer", "queue:poison", "delete_message"),  # poison replay
        ("deployer", "table:sync", "upsert_entity"),  # sync run
    ],
)
def test_the_calls_that_were_refused_in_azure_are_granted(identity: str, resource: str, method: str) -> None:
    assert granted(all_grants(), identity, resource_ids()[resource], OPERATIONS[method], False)


def test_nothing_is_granted_that_no_call_needs() -> None:
    """Least privilege: each role assignment is needed by some call of its identity on its scope."""
    grants, ids = all_grants(), resource_ids()
    used = set()
    for _, identity, resource, method in needed():
        permission = OPERATIONS[method]
        used |= {
            grant
            for grant in grants
            if grant.identity == identity
            and covers(grant.scope, ids[resource])
            and any(allows(grant.role, name, permission.data) for name in permission.any_of)
        }
    for entries in HTTP_OPERATIONS.values():
        for identity, _, permission in entries:
            used |= {g for g in grants if g.identity == identity and allows(g.role, permission.any_of[0], False)}
    monitoring = {g for g in grants if g.role.name == "Monitoring Metrics Publisher"}  # telemetry, not an SDK call
    assert set(grants) - used - monitoring == set()
