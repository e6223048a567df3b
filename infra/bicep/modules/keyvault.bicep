// Key Vault with RBAC authorisation, soft delete and purge protection. The operator sets the OAuth
// client secret and the console token, and `connect` writes the ServiceNow tokens (see the README's
// deployment section). Locally managed sensors' API tokens may come in as a secure parameter (never
// kept in the deployment history), each as the secret its source reads: defender-sensor-<name>-token.
param name string
param location string
param tags object
param networkIsolation bool
@description('With networkIsolation: one public IP (the deployer\'s) allowed in for the post-deployment steps; empty: none.')
param allowedIpAddress string = ''
@secure()
param sensorApiTokens object = {}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: defaultAction is Deny with networkIsolation; without it the vault is reached over its public endpoint, RBAC-only
  // checkov:skip=CKV_AZURE_189: publicNetworkAccess is Disabled with networkIsolation (the check cannot read the conditional and crashes on it); without it the laptop steps (connect) reach the vault over its public endpoint, RBAC-only
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: (networkIsolation && empty(allowedIpAddress)) ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: networkIsolation ? 'Deny' : 'Allow'
      ipRules: (networkIsolation && !empty(allowedIpAddress)) ? [
        {
          value: allowedIpAddress
        }
      ] : []
    }
  }
}

resource sensorTokens 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for sensor in items(sensorApiTokens): {
  // checkov:skip=CKV_AZURE_41: a sensor API token has no expiry date of its own; it is revoked and replaced on the sensor
  parent: vault
  name: 'defender-sensor-${sensor.key}-token'
  properties: {
    value: sensor.value
    contentType: 'text/plain'
  }
}]

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
