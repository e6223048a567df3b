#!/bin/sh
# The az CLI path of `azd up`: check, provision, publish, then the same steps as azd's postprovision hook.
#   infra/deploy.sh <resource group> <location> <parameters file, a copy of infra/bicep/main.example.bicepparam>
set -eu
group=$1 location=$2 parameters=$3
cd "$(dirname "$0")/.."
if grep -Eq 'dev12345|\.example' "$parameters"; then
  echo "$parameters still holds the worked example's placeholders (dev12345, .example hosts): set your own" >&2
  exit 2
fi
make deps >/dev/null
AZURE_SUBSCRIPTION_ID=${AZURE_SUBSCRIPTION_ID:-$(az account show --query id -o tsv)}
export AZURE_SUBSCRIPTION_ID
# Refuses what Azure would refuse, registers Microsoft.App for VNet integration, and names who deploys
# (a user or a pipeline's service principal) for the deployer's roles.
principal=$(.venv/bin/python -m tools.deploy.before_provision --parameters "$parameters" --print-principal)
me=${principal% *} kind=${principal#* }
az group create -n "$group" -l "$location" >/dev/null
deployment=$(az deployment group create -g "$group" -f infra/bicep/main.bicep -p "$parameters" \
  -p deployerPrincipalId="$me" deployerPrincipalType="$kind" --query properties.outputs -o json)
output() { printf '%s' "$deployment" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1']['value'])"; }
func azure functionapp publish "$(output functionAppName)" --python
export KEY_VAULT_URL="$(output KEY_VAULT_URL)" ALERTS_QUEUE="$(output ALERTS_QUEUE)"
export ALERTS_STORAGE__queueServiceUri="$(output ALERTS_STORAGE__queueServiceUri)"
export ALERTS_STORAGE__tableServiceUri="$(output ALERTS_STORAGE__tableServiceUri)"
export ALERTS_STORAGE__blobServiceUri="$(output ALERTS_STORAGE__blobServiceUri)"
export SERVICENOW_CONNECTIONS="$(output SERVICENOW_CONNECTIONS)" DEFENDER_SOURCES="$(output DEFENDER_SOURCES)"
exec infra/hooks/postprovision.sh
