"""The common package of the Defender for IoT → ServiceNow function app.

Everything the three functions share lives here, one module per domain concept; the function
modules under ``functions/`` only decode their trigger and call one entry point from this package.
"""
