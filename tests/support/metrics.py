"""The session's metric points by name (tests/support/secret_scan.py installs the one meter provider)."""

from __future__ import annotations

from typing import Any

from tests.support.secret_scan import METRICS

Attributes = tuple[tuple[str, Any], ...]


def points(name: str) -> dict[Attributes, Any]:
    """Each data point of the metric, by its sorted attributes (cumulative: compare before and after)."""
    found: dict[Attributes, Any] = {}
    data = METRICS.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        found[tuple(sorted((point.attributes or {}).items()))] = point
    return found


def count(name: str, **attributes: Any) -> float:
    """A counter's value (a histogram's sample count) for exactly these attributes; 0 before its first."""
    point = points(name).get(tuple(sorted(attributes.items())))
    if point is None:
        return 0
    return float(point.count if hasattr(point, "count") else point.value)
