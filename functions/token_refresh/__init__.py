"""Timer trigger: renews ServiceNow OAuth tokens in Key Vault before they expire."""

import logging

import azure.functions as func

from shared.platform.imports import late_imports

# The handler (and the SDKs it needs) is imported on the first invocation, not when the host indexes
# the app: start-up stays light and each function loads only what it uses.
bp = func.Blueprint()
logger = logging.getLogger(__name__)


@bp.function_name("token_refresh")
@bp.timer_trigger(arg_name="timer", schedule="%TOKEN_REFRESH_SCHEDULE%", run_on_startup=False, use_monitor=True)
def token_refresh(timer: func.TimerRequest) -> None:
    if timer.past_due:
        logger.warning("token refresh tick is past due; running now")
    with late_imports:
        from shared.app.tokens import refresh_tokens  # noqa: PLC0415 - see above

    outcomes = refresh_tokens()
    failed = [o.connection for o in outcomes if o.error]
    if failed:
        # Fail the invocation so the host records it; the last good tokens stay in place.
        raise RuntimeError(f"token refresh failed for connection(s) {', '.join(failed)}; see the log above")
