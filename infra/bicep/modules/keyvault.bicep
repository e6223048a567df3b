// Key Vault with RBAC authorisation, soft delete and purge protection. Secret values are never in
// Bicep: the operator sets the OAuth client secret and the console token, and `connect` writes the
// ServiceNow tokens (see the README's deployment section).
param name string
param location string
param tags object
param networkIsolation bool

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
    publicNetworkAccess: networkIsolation ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: networkIsolation ? 'Deny' : 'Allow'
    }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
