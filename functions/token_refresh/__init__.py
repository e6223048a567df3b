"""Timer trigger: renews ServiceNow OAuth tokens in Key Vault before they expire."""

import logging

import azure.functions as func

from shared.tokens import refresh_all_connections

bp = func.Blueprint()
logger = logging.getLogger(__name__)


@bp.function_name("token_refresh")
@bp.timer_trigger(arg_name="timer", schedule="%TOKEN_REFRESH_SCHEDULE%", run_on_startup=False, use_monitor=True)
def token_refresh(timer: func.TimerRequest) -> None:
    if timer.past_due:
        logger.warning("token refresh tick is past due; running now")
    refresh_all_connections()
