"""The package's shape: no import cycles anywhere in shared/ (import-linter's layers hold between
packages; this holds inside them too)."""

from __future__ import annotations

import grimp


def test_shared_has_no_import_cycles() -> None:
    graph = grimp.build_graph("shared")
    cycles = sorted(
        {
            tuple(sorted((module, imported)))
            for module in graph.modules
            for imported in graph.find_modules_directly_imported_by(module)
            if graph.chain_exists(importer=imported, imported=module)
        }
    )
    assert cycles == [], f"modules that import each other, directly or through others: {cycles}"
