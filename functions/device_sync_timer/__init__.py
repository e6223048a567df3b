"""Timer trigger: keeps the ServiceNow CMDB in step with Defender for IoT's inventory, source by source."""

import azure.functions as func

from shared.platform.imports import late_imports

# The handler (and the SDKs it needs) is imported on the first invocation, not when the host indexes
# the app: start-up stays light and each function loads only what it uses.
bp = func.Blueprint()


@bp.function_name("device_sync_timer")
@bp.timer_trigger(arg_name="timer", schedule="%DEVICE_SYNC_SCHEDULE%", run_on_startup=False, use_monitor=True)
def device_sync_timer(timer: func.TimerRequest) -> None:
    with late_imports:
        from shared.app.devices import run_scheduled_sync  # noqa: PLC0415 - see above

    run_scheduled_sync(past_due=timer.past_due)
