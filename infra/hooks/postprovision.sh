#!/bin/sh
# azd runs this after provisioning (azure.yaml): sign the ServiceNow connections in (the password is asked
# for, used once and never stored), apply the starter rules when none are applied yet, and verify. azd
# exports the template's outputs (KEY_VAULT_URL, ALERTS_QUEUE, ALERTS_STORAGE__*) to this environment.
set -eu
cd "$(dirname "$0")/../.."
make deps >/dev/null
exec .venv/bin/python -m tools.deploy.after_provision "$@"
