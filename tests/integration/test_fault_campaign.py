"""A small fault campaign in every test run; `python -m tools.campaign` runs the full one (10,000 alerts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.secret_scan import record_text
from tools.campaign import Plan, run_campaign

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_no_alert_is_lost_or_duplicated_under_every_fault(tmp_path: Path) -> None:
    plan = Plan(
        alerts=200,
        invalid=10,
        burst=10,
        outage_seconds=4,
        revoked_seconds=2,
        key_vault_outage_seconds=4,
        kills=2,
        timeout=240,
        assets=True,  # the device sync on: every record names its device's CI, the lookup on the path of each
    )
    report = run_campaign(plan, tmp_path, say=lambda line: None)
    record_text(report.host_logs)  # the host ran in its own process: its logs join the suite's secret scan
    timeline = "\n".join(report.events)
    assert report.servicenow_faults > 0 and report.key_vault_faults > 0 and report.kills == 3, timeline
    assert (report.lost, report.duplicated, report.unlinked) == (0, 0, 0), timeline
    assert report.poisoned_invalid == plan.invalid and report.poisoned_valid == 0, report.reasons
    assert all(reason.startswith("invalid message: ") for reason in report.reasons), report.reasons
