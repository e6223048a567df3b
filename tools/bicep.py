"""An offline evaluator of the project's Bicep templates: the values Azure will see, for the tests and the
pre-deployment checks (tools.deploy.before_provision).

The Bicep compiler cannot be installed here, and pycep (the parser the tests use) keeps an expression's
tree but not the difference between the string 'name' and the identifier ``name``. So the source is
read once with every string literal marked (``LITERAL`` after its opening quote): an unmarked string in
the tree is then an identifier, and one that resolves to nothing is an error, never a silent literal.
Two more of pycep's habits are handled here: ``${…}`` interpolations are kept as raw text (each is
parsed on its own), and ``a ? b : c`` inside a wider expression binds tighter than Bicep's lowest
precedence, so the templates parenthesise every conditional that is part of a larger expression
(``test_every_conditional_is_parenthesised`` keeps them so).

What Azure computes at deployment (a resource's endpoints, a principal's id) evaluates to ``Unknown``,
which propagates: a check that needs a concrete value then fails rather than passing on a guess.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

LITERAL = "\u00a7"  # not used in the templates; marks "this string was quoted in the source"
SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000001"
RESOURCE_GROUP = "rg-dfiot"
LOCATION = "westeurope"


class BicepError(ValueError):
    """The template uses something this evaluator does not know: extend the evaluator, never guess."""


@dataclass(frozen=True)
class Unknown:
    """A value only Azure knows at deployment (an endpoint, a principal id)."""

    text: str

    def __str__(self) -> str:
        return f"<{self.text}>"


def mark_literals(source: str) -> str:
    """The source with ``LITERAL`` after the opening quote of every string (comments left out)."""
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        if source.startswith("//", i):
            end = source.find("\n", i)
            i = n if end < 0 else end
            continue
        if source.startswith("/*", i):
            i = source.index("*/", i) + 2
            continue
        if source.startswith("'''", i):  # a multi-line string: no escapes, no interpolation
            end = source.index("'''", i + 3)
            out.append("'''" + LITERAL + source[i + 3 : end] + "'''")
            i = end + 3
            continue
        if source[i] == "'":
            if re.search(r"(targetScope\s*=|(resource|module)\s+\w+)\s*$", "".join(out[-80:])):
                end = source.index("'", i + 1)  # a scope, type or module path: pycep reads it as it is
                out.append(source[i : end + 1])
                i = end + 1
                continue
            text, i = _string(source, i)
            out.append(text)
            continue
        out.append(source[i])
        i += 1
    return "".join(out)


def _string(source: str, start: int) -> tuple[str, int]:
    """One quoted string from ``start`` (its quote), marked, with the strings inside its interpolations."""
    out = ["'", LITERAL]
    i = start + 1
    while True:
        char = source[i]
        if char == "\\":
            out.append(source[i : i + 2])
            i += 2
        elif char == "'":
            out.append("'")
            return "".join(out), i + 1
        elif source.startswith("${", i):
            depth, j = 1, i + 2
            inner: list[str] = []
            while depth:
                if source[j] == "'":
                    text, j = _string(source, j)
                    inner.append(text)
                    continue
                depth += {"{": 1, "}": -1}.get(source[j], 0)
                if depth:
                    inner.append(source[j])
                j += 1
            out.append("${" + "".join(inner) + "}")
            i = j
        else:
            out.append(char)
            i += 1


@cache
def parse(path: Path) -> dict[str, Any]:
    return parse_text(path.read_text())


def parse_text(text: str) -> dict[str, Any]:
    document: dict[str, Any] = dict(BicepParser().parse(text=mark_literals(text)))
    for section in ("parameters", "variables", "resources", "modules", "outputs"):
        document.setdefault(section, {})
    return document


def bicepparam_values(path: Path) -> dict[str, Any]:
    """The values a ``.bicepparam`` file gives (each ``param x = …`` read as the expression it is)."""
    lines = [line for line in path.read_text().splitlines() if not line.strip().startswith("using ")]
    text = "\n".join(re.sub(r"^param\s+", "var ", line) for line in lines) + "\n"
    document = parse_text(text)
    values = Deployment(path, {}, document=document)
    return {name: values.variable(name) for name in document["variables"]}


def azd_parameter_values(path: Path, template: Path, environment: Mapping[str, str]) -> dict[str, Any]:
    """The values azd gives from a ``main.parameters.json``: ``${VAR}`` / ``${VAR=default}`` from its
    environment, each turned into the type the template declares (azd passes them all as strings)."""
    declared = parse(template)["parameters"]
    values: dict[str, Any] = {}
    for name, entry in json.loads(path.read_text())["parameters"].items():
        raw = entry.get("value")
        if isinstance(raw, str):
            raw = re.sub(r"\$\{(\w+)(?:=([^}]*))?\}", lambda m: environment.get(m.group(1)) or (m.group(2) or ""), raw)
            kind = declared.get(name, {}).get("type")
            if kind == "bool":
                raw = raw.strip().lower() == "true"
            elif kind == "int":
                raw = int(raw) if raw.strip() else None
            elif kind in ("array", "object"):
                raw = json.loads(raw) if raw.strip() else None
        if raw not in (None, ""):
            values[name] = raw
    return values


@cache
def parse_expression(text: str) -> Any:
    return BicepParser().parse(text=f"var v = {text}\n")["variables"]["v"]["value"]


def unique_string(*parts: str) -> str:
    """Deterministic stand-in for uniqueString(): 13 characters of [a-z2-7], as Azure's are [a-z0-9]."""
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:13]


@dataclass
class Resource:
    deployment: Deployment
    symbol: str
    type: str
    name: Any  # the full name: a child's name is prefixed with its parent's
    body: Mapping[str, Any]
    existing: bool
    item: Mapping[str, Any] = field(default_factory=dict)  # loop variables of this copy

    @property
    def id(self) -> str:
        segments = self.type.split("/")
        names = str(self.name).split("/")
        path = f"{segments[0]}/{segments[1]}/{names[0]}"
        for kind, name in zip(segments[2:], names[1:], strict=True):
            path += f"/{kind}/{name}"
        return f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}/providers/{path}"

    def value(self, key: str) -> Any:
        """A property of the resource's body, evaluated in its deployment (with its loop variables)."""
        return self.deployment.evaluate(self.body.get(key), self.item)


class Deployment:
    """One template deployed with given parameters; modules are deployments of their own."""

    def __init__(
        self,
        path: Path,
        parameters: Mapping[str, Any],
        *,
        document: dict[str, Any] | None = None,
        missing: str = "refuse",
    ) -> None:
        """``missing``: "refuse" a required parameter that is not given, or take it as ``Unknown``
        (what azd will ask for, when only other parameters matter)."""
        self.path = path
        self.document = document if document is not None else parse(path)
        self._variables: dict[str, Any] = {}
        declared = self.document["parameters"]
        unknown = set(parameters) - set(declared)
        if unknown:
            raise BicepError(f"{path.name}: no parameters {sorted(unknown)}")
        self.parameters: dict[str, Any] = {}
        for name, declaration in declared.items():
            if name in parameters:
                self.parameters[name] = parameters[name]
            elif declaration.get("default") is not None:
                self.parameters[name] = self.evaluate(declaration["default"])
            elif missing == "unknown":
                self.parameters[name] = Unknown(f"parameter {name}")
            else:
                raise BicepError(f"{path.name}: parameter {name} has no default and was not given")

    # -- what it deploys -------------------------------------------------------------------
    def modules(self) -> dict[str, Deployment]:
        """The modules this deployment deploys (a module whose condition is false is left out)."""
        return {symbol: module for symbol in self.document["modules"] if (module := self.module(symbol)) is not None}

    @cache  # noqa: B019 - deployments live as long as a test
    def module(self, symbol: str) -> Deployment | None:
        declaration = self.document["modules"][symbol]
        config = declaration["config"]
        if "loop_type" in config:
            raise BicepError(f"{self.path.name}: module loops are not supported ({symbol})")
        if "condition" in config and "config" in config:
            if not self.evaluate(config["condition"]):
                return None
            config = config["config"]
        params = {name: self.evaluate(value) for name, value in (config.get("params") or {}).items()}
        return Deployment(self.path.parent / declaration["detail"]["path"], params)

    def resources(self) -> Iterator[Resource]:
        """Every resource copy this deployment deploys (loops expanded, false conditions left out)."""
        for symbol in self.document["resources"]:
            yield from self.copies(symbol)

    def all_resources(self) -> Iterator[Resource]:
        """This deployment's resources and its modules', recursively."""
        yield from self.resources()
        for module in self.modules().values():
            yield from module.all_resources()

    def copies(self, symbol: str) -> list[Resource]:
        declaration = self.document["resources"][symbol]
        config = declaration["config"]
        items: list[dict[str, Any]] = [{}]
        if "loop_type" in config:
            items = self._loop_items(config["loop_type"], {})
            if config.get("condition") is not None:
                items = [item for item in items if self.evaluate(config["condition"], item)]
            config = config["config"]
        elif "condition" in config and "config" in config and set(config) == {"condition", "config"}:
            if not self.evaluate(config["condition"]):
                return []
            config = config["config"]
        copies = []
        for item in items:
            name = self.evaluate(config["name"], item)
            parent = config.get("parent")
            if parent is not None:
                name = f"{self.evaluate(parent, item).name}/{name}"
            copies.append(Resource(self, symbol, declaration["type"], name, config, declaration["existing"], item))
        return copies

    def output(self, name: str) -> Any:
        return self.evaluate(self.document["outputs"][name]["value"])

    def variable(self, name: str) -> Any:
        if name not in self._variables:
            self._variables[name] = self.evaluate(self.document["variables"][name]["value"])
        return self._variables[name]

    # -- expressions -----------------------------------------------------------------------
    def evaluate(self, node: Any, local: Mapping[str, Any] | None = None) -> Any:
        local = local or {}
        if isinstance(node, str):
            if node.startswith(LITERAL):
                return self._interpolate(node[len(LITERAL) :], local)
            return self._lookup(node, local)
        if node is None or isinstance(node, bool | int | float):
            return node
        if isinstance(node, list):
            return [self.evaluate(item, local) for item in node]
        if isinstance(node, dict):
            if set(node) == {"operator"}:
                return self._operator(node["operator"], local)
            if set(node) == {"function"}:
                return self._function(node["function"], local)
            if "loop_type" in node:
                return [
                    self.evaluate(node["config"], item)
                    for item in self._loop_items(node["loop_type"], local)
                    if node.get("condition") is None or self.evaluate(node["condition"], item)
                ]
            return {self._key(key, local): self.evaluate(value, local) for key, value in node.items()}
        raise BicepError(f"{self.path.name}: cannot evaluate {node!r}")

    def _key(self, key: str, local: Mapping[str, Any]) -> str:
        return str(self._interpolate(key[len(LITERAL) :], local)) if key.startswith(LITERAL) else key

    def _interpolate(self, text: str, local: Mapping[str, Any]) -> Any:
        parts = re.split(r"\$\{(.*?)\}(?![^{]*\})", text)
        if len(parts) == 1:
            return text
        values = [part if i % 2 == 0 else self.evaluate(parse_expression(part), local) for i, part in enumerate(parts)]
        unknown = [v for v in values if isinstance(v, Unknown)]
        if unknown:
            return Unknown("".join(str(v) for v in values))
        return "".join(_text(v) for v in values)

    def _lookup(self, name: str, local: Mapping[str, Any]) -> Any:
        if name in local:
            return local[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.document["variables"]:
            return self.variable(name)
        if name in self.document["resources"]:
            copies = self.copies(name)
            if "loop_type" in self.document["resources"][name]["config"]:
                return copies
            if not copies:
                return Unknown(f"{name} (not deployed)")
            return copies[0]
        if name in self.document["modules"]:
            return self.module(name) or Unknown(f"{name} (not deployed)")
        raise BicepError(f"{self.path.name}: '{name}' is no parameter, variable, resource or module")

    def _loop_items(self, loop: Mapping[str, Any], local: Mapping[str, Any]) -> list[dict[str, Any]]:
        detail = loop["detail"]
        array = detail["array_name"]
        values = self.evaluate(array, local) if isinstance(array, str | dict) else [self.evaluate(a) for a in array]
        if isinstance(values, Unknown):
            raise BicepError(f"{self.path.name}: a loop over a value only Azure knows ({values})")
        items = []
        for index, value in enumerate(values):
            item = dict(local)
            item[detail["item_name"]] = value
            if loop["type"] == "array_index":
                item[detail["index_name"]] = index
            items.append(item)
        return items

    def _chain(self, node: Any, keys: bool = False) -> list[Any]:
        """A property/index chain as [head, key, …]: pycep nests ``a.b.c[0].d`` to the right, each tail's head
        being a property name (``keys``), not a value."""
        if isinstance(node, dict) and set(node) == {"operator"}:
            kind, operands = node["operator"]["type"], node["operator"]["operands"]
            if kind == "property_accessor":
                return [*self._chain(operands["operand_1"], keys), *self._chain(operands["operand_2"], True)]
            if kind == "index_accessor":
                return [*self._chain(operands["operand_1"], keys), _Index(operands["operand_2"])]
        if keys and not isinstance(node, str):
            raise BicepError(f"{self.path.name}: cannot follow {node!r}")
        return [node]

    def _access(self, node: Mapping[str, Any], local: Mapping[str, Any]) -> Any:
        head, *keys = self._chain({"operator": node})
        value = self.evaluate(head, local)
        for position, key in enumerate(keys):
            if isinstance(value, Unknown):
                return value
            if isinstance(key, _Index):
                value = value[self.evaluate(key.value, local)]
            elif isinstance(value, Resource):
                value = self._resource_property(value, key, keys[position + 1 :])
                if isinstance(value, Unknown):
                    return value
            elif isinstance(value, Deployment):
                if key != "outputs":
                    raise BicepError(f"{self.path.name}: a module has outputs only, not {key}")
                return value.output(keys[position + 1])
            elif isinstance(value, Mapping):
                if key not in value:
                    raise BicepError(f"{self.path.name}: no property {key} in {sorted(value)}")
                value = value[key]
            else:
                raise BicepError(f"{self.path.name}: cannot read {key} of {value!r}")
        return value

    @staticmethod
    def _resource_property(resource: Resource, key: str, rest: list[Any]) -> Any:
        if key == "id":
            return resource.id
        if key == "name":
            return resource.name
        return Unknown(".".join([resource.symbol, key, *map(str, rest)]))

    def _operator(self, operator: Mapping[str, Any], local: Mapping[str, Any]) -> Any:
        kind = operator["type"]
        operands = operator["operands"]
        if kind in ("property_accessor", "index_accessor"):
            return self._access(operator, local)
        if kind == "conditional":
            condition = self.evaluate(operands["condition"], local)
            if isinstance(condition, Unknown):
                return condition
            return self.evaluate(operands["true_value" if condition else "false_value"], local)
        if kind == "not":
            value = self.evaluate(operands["bool_value"], local)
            return value if isinstance(value, Unknown) else not value
        if kind == "minus" and set(operands) == {"integer_value"}:
            return -self.evaluate(operands["integer_value"], local)
        left = self.evaluate(operands["operand_1"], local)
        if kind == "and" and left is False:
            return False
        if kind == "or" and left is True:
            return True
        right = self.evaluate(operands["operand_2"], local)
        if isinstance(left, Unknown) or isinstance(right, Unknown):
            return Unknown(f"{left} {kind} {right}")
        binary: dict[str, Callable[[Any, Any], Any]] = {
            "and": lambda a, b: a and b,
            "or": lambda a, b: a or b,
            "add": lambda a, b: a + b,
            "minus": lambda a, b: a - b,
            "multiply": lambda a, b: a * b,
            "divide": lambda a, b: int(a / b),  # Bicep divides integers, truncating
            "modulo": lambda a, b: a % b,
            "equals": lambda a, b: a == b,
            "not_equals": lambda a, b: a != b,
            "less_than": lambda a, b: a < b,
            "less_than_or_equals": lambda a, b: a <= b,
            "greater_than": lambda a, b: a > b,
            "greater_than_or_equals": lambda a, b: a >= b,
            "coalesce": lambda a, b: b if a is None else a,
        }
        if kind not in binary:
            raise BicepError(f"{self.path.name}: operator {kind} is not supported")
        return binary[kind](left, right)

    def _function(self, function: Mapping[str, Any], local: Mapping[str, Any]) -> Any:
        kind = function["type"]
        args = [self.evaluate(value, local) for value in (function.get("parameters") or {}).values()]
        if kind in _CONTEXT:
            return _CONTEXT[kind]()
        if kind == "load_text_content":  # compiled in: a path relative to the template, read as it is
            return (self.path.parent / args[0]).read_text(encoding="utf-8")
        if any(isinstance(a, Unknown) for a in args) and kind not in ("empty", "union"):
            return Unknown(f"{kind}({', '.join(map(str, args))})")
        if kind not in _FUNCTIONS:
            raise BicepError(f"{self.path.name}: function {kind} is not supported")
        return _FUNCTIONS[kind](*[a for a in args if a is not None])


@dataclass(frozen=True)
class _Index:
    value: Any


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def _empty(value: Any) -> bool | Unknown:
    if isinstance(value, Unknown):
        return value
    return value is None or len(value) == 0


def _union(*values: Any) -> Any:
    if any(isinstance(v, Unknown) for v in values):
        return Unknown("union(…)")
    if isinstance(values[0], dict):
        merged: dict[str, Any] = {}
        for value in values:
            merged.update(value)
        return merged
    return list(dict.fromkeys(item for value in values for item in value))


_CONTEXT: dict[str, Callable[[], dict[str, Any]]] = {
    "subscription": lambda: {"id": f"/subscriptions/{SUBSCRIPTION_ID}", "subscriptionId": SUBSCRIPTION_ID},
    "resource_group": lambda: {
        "id": f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}",
        "name": RESOURCE_GROUP,
        "location": LOCATION,
    },
    "environment": lambda: {
        "name": "AzureCloud",
        "suffixes": {"storage": "core.windows.net", "keyvaultDns": ".vault.azure.net"},
    },
}
_FUNCTIONS: dict[str, Any] = {
    "take": lambda value, count: value[: max(count, 0)],
    "unique_string": unique_string,
    "guid": lambda *parts: str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(map(str, parts)))),
    "to_lower": lambda value: value.lower(),
    "to_upper": lambda value: value.upper(),
    "replace": lambda value, old, new: value.replace(old, new),
    "empty": _empty,
    "union": _union,
    "string": _text,
    "int": int,
    "length": len,
    "min": min,
    "max": max,
    "contains": lambda container, item: item in container,
    "first": lambda value: value[0],
    "last": lambda value: value[-1],
    "items": lambda value: [{"key": k, "value": v} for k, v in value.items()],
    "subscription_resource_id": lambda kind, *names: (
        f"/subscriptions/{SUBSCRIPTION_ID}/providers/{kind}/{'/'.join(names)}"
    ),
}


def _assignment(code: str, at: int) -> bool:
    """``=`` at ``at`` assigns (``x = …``) rather than compares (``==``, ``<=``, ``>=``, ``!=``)."""
    return code[at - 1 : at + 2].count("=") == 1 and code[at - 1 : at] not in ("<", ">", "!")


def conditionals_inside_expressions(path: Path) -> list[str]:
    """Lines where a conditional's condition holds an operator outside parentheses (``a && b ? c : d``),
    which pycep misreads as ``a && (b ? c : d)``."""
    found = []
    for number, line in enumerate(mark_literals(path.read_text()).splitlines(), start=1):
        code = re.sub(r"'[^']*'", "''", line.split("//", 1)[0] if "'" not in line else line)
        for mark in re.finditer(r"(?<!\?)\?(?![?.])", code):
            start, depth = mark.start() - 1, 0
            while start >= 0:
                char = code[start]
                if char in ")]":
                    depth += 1
                elif char in "([{":
                    if depth == 0:
                        break
                    depth -= 1
                elif (depth == 0 and char in ",:") or (depth == 0 and char == "=" and _assignment(code, start)):
                    break
                start -= 1
            condition = code[start + 1 : mark.start()]
            while re.search(r"\([^()]*\)", condition):
                condition = re.sub(r"\([^()]*\)", "", condition)
            if re.search(r"&&|\|\||[=!<>]=|[<>+*/%-]", condition):
                found.append(f"{path.name}:{number}: {line.strip()}")
    return found
