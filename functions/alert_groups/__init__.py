"""Timer trigger: lists the new alerts of each alert group on the group's record, in batched work notes.

Every 30 seconds: the batching interval. A timer runs on one instance at a time however far the app
scales out, so one writer handles each group's notes (it is safe without that, too).
"""

import azure.functions as func

from shared.platform.imports import late_imports

# The handler (and the SDKs it needs) is imported on the first invocation, not when the host indexes
# the app: start-up stays light and each function loads only what it uses.
bp = func.Blueprint()


@bp.function_name("alert_groups")
@bp.timer_trigger(arg_name="timer", schedule="*/30 * * * * *", run_on_startup=False, use_monitor=True)
def alert_groups(timer: func.TimerRequest) -> None:
    with late_imports:
        from shared.app.groups import run_group_notes  # noqa: PLC0415 - see above

    run_group_notes()
