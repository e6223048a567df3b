#!/bin/sh
# azd runs this before provisioning (azure.yaml): refuse parameters Azure would refuse (before any Azure call),
# set AZURE_PRINCIPAL_TYPE from the signed-in principal (a pipeline's service principal, not a User), and
# register Microsoft.App when VNet integration is on (tools/deploy/before_provision.py says why).
set -eu
cd "$(dirname "$0")/../.."
make deps >/dev/null
exec .venv/bin/python -m tools.deploy.before_provision "$@"
