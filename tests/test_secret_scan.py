"""Runs last: no secret value the suite used appears in any captured log record, metric or host log."""

from __future__ import annotations

import logging

from tests.support import secret_scan


def test_no_secret_in_any_captured_log_or_telemetry() -> None:
    secret_scan.harvest()
    texts = [*secret_scan.CAPTURED.texts, *secret_scan.metric_texts()]
    leaks = secret_scan.findings(texts, secret_scan.SECRETS)
    summary = secret_scan.summary()
    print(f"secret scan: {len(secret_scan.SECRETS)} secret values against {len(texts)} texts ({summary})")
    if summary["records"]:  # other tests ran: the emulators they used must have given up their secrets
        assert secret_scan.SECRETS, "no secret values were collected: the scan would prove nothing"
    assert not leaks, "secret values in captured output:\n" + "\n".join(leaks)


def test_the_scan_finds_a_leak() -> None:
    # The scan itself must work: a record carrying a known secret (in its message, an extra or an
    # exception) is found.
    capture = secret_scan.Captured()
    logger = logging.getLogger("scan-self-test")
    logger.addHandler(capture)
    logger.propagate = False
    try:
        logger.warning("token %s", "tok-AAAA-1111-leaked")
        logger.info("ok", extra={"authorization": "Bearer tok-BBBB-2222-leaked"})
        try:
            raise ValueError("password was tok-CCCC-3333-leaked")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(capture)
    secrets = {"tok-AAAA-1111-leaked", "tok-BBBB-2222-leaked", "tok-CCCC-3333-leaked", "never-logged-value"}
    assert len(secret_scan.findings(capture.texts, secrets)) == 3
