"""The Functions entry point: builds the FunctionApp and registers the five blueprints.

Settings are validated here, at import, so a missing or malformed app setting stops the app from
starting with a message that names the setting, instead of failing on the first alert.
"""

import logging

import azure.functions as func

from functions.alert_forwarder import bp as alert_forwarder
from functions.alert_groups import bp as alert_groups
from functions.alert_intake import bp as alert_intake
from functions.device_sync_timer import bp as device_sync_timer
from functions.token_refresh import bp as token_refresh
from shared.platform import telemetry
from shared.settings import get_settings, start_up_warnings

settings = get_settings()  # a missing or malformed setting stops start-up here, naming it
telemetry.configure()
for warning in start_up_warnings(settings):
    logging.getLogger("shared.settings").warning(warning)

app = func.FunctionApp()
app.register_functions(alert_forwarder)
app.register_functions(device_sync_timer)
app.register_functions(token_refresh)
app.register_functions(alert_intake)
app.register_functions(alert_groups)
