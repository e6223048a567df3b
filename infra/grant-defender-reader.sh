#!/bin/sh
# Read access to Defender for IoT in one subscription for the app's identity (and, with write-back, the alert
# closer): defender-reader.bicep defines its custom roles and assigns them in one deployment. A new role
# definition takes a while to replicate, so the first assignment can fail with RoleDefinitionDoesNotExist; this
# tries again until the definition is visible (running it again later is always safe).
#   infra/grant-defender-reader.sh <subscription id> <location> <identityPrincipalId output> [true: write-back]
set -eu
subscription=$1 location=$2 principal=$3 writeback=${4:-false}
attempts=${GRANT_ATTEMPTS:-10} wait=${GRANT_RETRY_SECONDS:-30}
template="$(dirname "$0")/bicep/defender-reader.bicep"
attempt=1
while :; do
  if output=$(az deployment sub create --subscription "$subscription" -l "$location" -f "$template" \
    -p principalId="$principal" writeBack="$writeback" -o none 2>&1); then
    echo "Defender for IoT access granted to $principal in subscription $subscription"
    exit 0
  fi
  case $output in
    *RoleDefinitionDoesNotExist*) ;;
    *) printf '%s\n' "$output" >&2; exit 1 ;;
  esac
  if [ "$attempt" -ge "$attempts" ]; then
    printf '%s\n' "$output" >&2
    echo "the new role definition is still not visible after $attempt tries: run this again in a few minutes" >&2
    exit 1
  fi
  echo "the new role definition is not visible yet (it replicates): trying again in $wait s ($attempt of $attempts)" >&2
  sleep "$wait"
  attempt=$((attempt + 1))
done
