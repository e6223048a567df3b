"""Queue trigger: one Defender for IoT alert or system notification per message."""

import logging

import azure.functions as func

from shared.platform.imports import late_imports

# The handler (and the SDKs it needs) is imported on the first invocation, not when the host indexes
# the app: start-up stays light and each function loads only what it uses.
bp = func.Blueprint()
logger = logging.getLogger(__name__)


@bp.function_name("alert_forwarder")
@bp.queue_trigger(arg_name="msg", queue_name="%ALERTS_QUEUE%", connection="ALERTS_STORAGE")
def alert_forwarder(msg: func.QueueMessage) -> None:
    logger.info("alert message %s received (dequeue count %s)", msg.id, msg.dequeue_count)
    with late_imports:
        from shared.app.forwarding import handle_queue_message  # noqa: PLC0415 - see above

    handle_queue_message(msg.get_body(), message_id=msg.id or "")
