"""Published examples, transcribed: what Microsoft and ServiceNow show their services return and accept.

Each fixture is ``tests/fixtures/<area>/<name>.json``::

    {"source": "<where it is published: repo:path@commit or URL>",
     "notes": "<what was transcribed, and what the source leaves open>",
     "documents": [<the documents, as published; placeholders only where the source has them>]}

The parsers are tested against every document, and the emulators against their shapes: ``shape()`` gives a
document's key paths and, for the fields named, the values seen, so an emulator that adds a field or a value
that no published example shows fails its contract test.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@dataclass(frozen=True)
class Fixture:
    path: Path
    source: str
    notes: str
    documents: list[Any]


def load(area: str, name: str) -> Fixture:
    path = FIXTURES / area / f"{name}.json"
    document = json.loads(path.read_text())
    assert document.get("source"), f"{path}: every fixture names its source"
    return Fixture(path, document["source"], document.get("notes", ""), document["documents"])


def all_in(area: str) -> list[Fixture]:
    return [load(area, path.stem) for path in sorted((FIXTURES / area).glob("*.json"))]


def key_paths(document: Any, prefix: str = "") -> set[str]:
    """Every key path of a document: ``properties.firmwares[].version``; list items share one path."""
    paths: set[str] = set()
    if isinstance(document, Mapping):
        for key, value in document.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            paths.add(path)
            paths |= key_paths(value, path)
    elif isinstance(document, list):
        for item in document:
            paths |= key_paths(item, f"{prefix}[]")
    return paths


def values_at(documents: Iterable[Any], path: str) -> set[Any]:
    """The scalar values found at a key path (as ``key_paths`` writes it) across documents."""
    found: set[Any] = set()

    def walk(node: Any, parts: list[str]) -> None:
        if not parts:
            if not isinstance(node, Mapping | list):
                found.add(node)
            return
        head, *rest = parts
        if head.endswith("[]"):
            key = head[:-2]
            items = node.get(key) if key and isinstance(node, Mapping) else node
            for item in items if isinstance(items, list) else []:
                walk(item, rest)
        elif isinstance(node, Mapping) and head in node:
            walk(node[head], rest)

    for document in documents:
        walk(document, path.split("."))
    return found


def unpublished(emulated: Iterable[Any], published: Iterable[Any], vocabularies: Iterable[str] = ()) -> list[str]:
    """What the emulated documents carry that no published one shows: key paths, and values at the paths
    named in ``vocabularies`` (status, severity, engine…). Empty when the emulator keeps to the contract."""
    emulated, published = list(emulated), list(published)
    known = set().union(*(key_paths(d) for d in published)) if published else set()
    problems = [f"key {path}" for path in sorted(set().union(*(key_paths(d) for d in emulated)) - known)]
    for path in vocabularies:
        extra = values_at(emulated, path) - values_at(published, path)
        problems += [f"{path} = {value!r}" for value in sorted(extra, key=repr)]
    return problems
