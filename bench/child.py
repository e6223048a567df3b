"""A benchmark that must measure a fresh process runs itself again as ``python -m <module> --child <spec>``."""

from __future__ import annotations

import json
import os
import subprocess  # runs this interpreter on a bench module only  # nosec B404
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def run_child(
    module: str,
    spec: Mapping[str, Any],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 3600,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Run the module's child mode (in ``cwd``'s checkout when given) and return the JSON object it printed
    last; its stderr on failure."""
    result = subprocess.run(  # noqa: S603 - this interpreter, a bench module, our own arguments  # nosec B603
        [sys.executable, "-m", module, "--child", json.dumps(spec)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        cwd=cwd,
    )
    if result.returncode:
        raise RuntimeError(f"{module} child exited with {result.returncode}: {result.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures
