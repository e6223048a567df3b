"""Timer trigger: collects alerts, their closings and sensor health from the Defender for IoT sources onto
the alerts queue, then closes at their source the alerts whose records analysts resolved in ServiceNow
(nothing to do until DEFENDER_SOURCES names a source)."""

import azure.functions as func

from shared.platform.imports import late_imports

# The handler (and the SDKs it needs) is imported on the first invocation, not when the host indexes
# the app: start-up stays light and each function loads only what it uses.
bp = func.Blueprint()


@bp.function_name("alert_intake")
@bp.timer_trigger(arg_name="timer", schedule="%ALERT_INTAKE_SCHEDULE%", run_on_startup=False, use_monitor=True)
def alert_intake(timer: func.TimerRequest) -> None:
    with late_imports:
        from shared.app.intake import run_cycle  # noqa: PLC0415 - see above

    run_cycle()
