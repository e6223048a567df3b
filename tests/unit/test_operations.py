"""The operations views and the code agree: every metric and dimension the workbook and the alert rules query is
one the code emits, every metric the code emits is documented (docs/operations.md), and the workbook deploys as a
valid shared workbook on the app's Application Insights."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from tests.conftest import ROOT
from tools.bicep import Deployment

BICEP = ROOT / "infra" / "bicep"
WORKBOOK = BICEP / "workbook" / "operations.json"
OPERATIONS = ROOT / "docs" / "operations.md"
INSTRUMENTS = {"create_counter", "create_gauge", "create_histogram"}
RECORDS = {"add", "set", "record"}


def _receiver(node: ast.expr) -> str | None:
    """``X`` of ``X.add`` / ``module.X.add``: the instrument's variable."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def emitted() -> dict[str, set[str]]:
    """Every metric the product creates, with the attribute keys passed wherever it is recorded."""
    variables: dict[str, str] = {}
    trees = [ast.parse(path.read_text()) for path in sorted((ROOT / "shared").rglob("*.py"))]
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                call = node.value
                if isinstance(call.func, ast.Attribute) and call.func.attr in INSTRUMENTS:
                    assert isinstance(call.args[0], ast.Constant), ast.unparse(node)
                    for target in node.targets:
                        variables[ast.unparse(target)] = str(call.args[0].value)
    keys: dict[str, set[str]] = {name: set() for name in variables.values()}
    for tree in trees:
        for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
            # Local names bound to instruments (``counter = A if c else B``) and to attribute dicts.
            aliases: dict[str, list[str]] = {}
            dicts: dict[str, ast.Dict] = {}
            for node in ast.walk(function):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    value, name = node.value, node.targets[0].id
                    if isinstance(value, ast.Dict):
                        dicts[name] = value
                    options = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
                    found = [variables[r] for o in options if (r := _receiver(o)) in variables]
                    if found:
                        aliases[name] = found
            for node in ast.walk(function):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if node.func.attr not in RECORDS or len(node.args) < 2:
                    continue
                receiver = _receiver(node.func.value)
                metrics = [variables[receiver]] if receiver in variables else aliases.get(receiver or "", [])
                attributes = node.args[1]
                if isinstance(attributes, ast.Name):
                    attributes = dicts.get(attributes.id, attributes)
                for metric in metrics:
                    assert isinstance(attributes, ast.Dict), f"{metric}: attributes not a dict literal"
                    keys[metric] |= {str(k.value) for k in attributes.keys if isinstance(k, ast.Constant)}
    return keys


def queries() -> list[str]:
    """Every KQL query of the workbook and of the alert rules."""
    workbook = json.loads(WORKBOOK.read_text())
    found = [item["content"]["query"] for item in workbook["items"] if item["type"] == 3]
    found += re.findall(r"^\s*query: '(.*)'$", (BICEP / "modules" / "alerts.bicep").read_text(), re.MULTILINE)
    assert len(found) >= 8 + 6
    return found


def queried(query: str) -> tuple[set[str], set[str]]:
    """(metric names, dimension keys) a query reads."""
    names = set(re.findall(r'name == "([\w.]+)"', query))
    for group in re.findall(r"name in \(([^)]*)\)", query):
        names |= set(re.findall(r'"([\w.]+)"', group))
    return names, set(re.findall(r"customDimensions\.(\w+)", query))


def test_the_scan_finds_the_instruments_and_their_dimensions() -> None:
    keys = emitted()
    assert keys["alerts.forwarded"] == {"action", "operation"}
    assert keys["alerts.deferred"] == {"reason"}  # through the forwarder's ``counter = A if … else B``
    assert keys["servicenow.refresh_token.days_left"] == {"connection"}  # through an ``attributes`` variable
    assert keys["queue.depth"] == {"queue"} and keys["alerts.latency"] == {"action"}


def test_every_metric_and_dimension_the_views_query_is_one_the_code_emits() -> None:
    keys = emitted()
    for query in queries():
        names, dimensions = queried(query)
        assert names, f"a query that names no metric: {query}"
        assert names <= set(keys), f"{sorted(names - set(keys))} are emitted nowhere: {query}"
        available = set().union(*(keys[n] for n in names))
        assert dimensions <= available, f"{sorted(dimensions - available)} not among {sorted(available)}: {query}"


def test_every_metric_the_code_emits_is_documented_with_its_dimensions() -> None:
    text = OPERATIONS.read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        if match := re.match(r"\| `([\w.]+)` \|", line):
            rows[match.group(1)] = line
    keys = emitted()
    assert set(keys) <= set(rows), f"undocumented in docs/operations.md: {sorted(set(keys) - set(rows))}"
    assert set(rows) <= set(keys), f"documented but emitted nowhere: {sorted(set(rows) - set(keys))}"
    for name, dimensions in keys.items():
        cells = rows[name].split("|")
        documented = set(re.findall(r"`(\w+)`", cells[3]))  # | name | unit | dimensions | meaning |
        assert documented == dimensions, f"{name}: documented {sorted(documented)}, emitted {sorted(dimensions)}"


def test_the_workbook_file_is_a_workbook() -> None:
    workbook = json.loads(WORKBOOK.read_text())
    assert workbook["version"] == "Notebook/1.0"
    tiles = [item for item in workbook["items"] if item["type"] == 3]
    assert len(tiles) == 8
    names = [item["name"] for item in workbook["items"]]
    assert len(names) == len(set(names))
    for tile in tiles:
        assert tile["content"]["version"] == "KqlItem/1.0" and tile["content"]["title"]
        assert "{TimeRange}" in tile["content"]["query"]  # the workbook's one time range parameter
    parameters = next(item for item in workbook["items"] if item["type"] == 9)["content"]["parameters"]
    assert [p["name"] for p in parameters] == ["TimeRange"]


def deployed_workbook() -> tuple[Any, Deployment]:
    deployment = Deployment(BICEP / "main.bicep", {"serviceNowConnections": "[]", "name": "dfiot"})
    monitoring = deployment.module("monitoring")
    assert monitoring is not None
    return next(r for r in monitoring.resources() if r.type == "Microsoft.Insights/workbooks"), deployment


def test_the_workbook_is_shared_on_the_apps_application_insights_and_named_by_the_alert_rules() -> None:
    workbook, deployment = deployed_workbook()
    monitoring = deployment.module("monitoring")
    assert monitoring is not None
    insights = next(r for r in monitoring.resources() if r.type == "Microsoft.Insights/components")
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", str(workbook.name))
    assert workbook.value("kind") == "shared"
    properties = workbook.value("properties")
    assert properties["category"] == "workbook" and properties["sourceId"] == insights.id
    data = json.loads(properties["serializedData"])  # a JSON string, as the resource type takes it
    assert data["version"] == properties["version"] == "Notebook/1.0"
    assert data["fallbackResourceIds"] == [insights.id]
    alerts = deployment.module("alerts")
    assert alerts is not None
    for rule in alerts.resources():
        assert f'Workbook: "{monitoring.output("workbookName")}"' in rule.value("properties")["description"]


def test_the_readme_and_the_operations_guide_name_the_workbook() -> None:
    assert "workbook" in (ROOT / "README.md").read_text().split("### Telemetry", 1)[1].split("\n## ", 1)[0]
    headings = re.findall(r"^## (.+)$", OPERATIONS.read_text(), re.MULTILINE)
    assert {"Metrics", "The workbook", "Logs"} <= set(headings)


def test_every_instrument_is_defined_in_the_one_telemetry_module() -> None:
    # One vocabulary: a module records through shared.platform.telemetry's instruments, never makes its own.
    makers = []
    for path in sorted((ROOT / "shared").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            if call and node.func.attr in {*INSTRUMENTS, "get_meter"}:  # type: ignore[attr-defined]
                makers.append(str(path.relative_to(ROOT)))
    assert set(makers) == {"shared/platform/telemetry.py"}
