"""Runs one function invocation the way the host logs it: Executing … / Executed … (Succeeded|Failed)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("funchost")


def invoke(name: str, function: Callable[..., Any], arguments: dict[str, Any], reason: str) -> bool:
    """Call the user function; True on success. Exceptions are logged with their traceback, not raised."""
    invocation = str(uuid.uuid4())
    logger.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", name, reason, invocation)
    started = time.perf_counter()
    try:
        result = function(**arguments)
        if inspect.isawaitable(result):
            asyncio.run(_await(result))
    except Exception:
        logger.exception(
            "Executed 'Functions.%s' (Failed, Id=%s, Duration=%.0fms)",
            name,
            invocation,
            (time.perf_counter() - started) * 1000,
        )
        return False
    logger.info(
        "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%.0fms)",
        name,
        invocation,
        (time.perf_counter() - started) * 1000,
    )
    return True


async def _await(awaitable: Any) -> None:
    await awaitable
