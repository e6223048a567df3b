// The function app on the Flex Consumption plan: Python 3.11, a user-assigned identity for
// everything (storage, Key Vault, Application Insights), HTTPS only, TLS 1.2, no FTP or basic
// publishing credentials (through basicPublishingCredentialsPolicies: Flex refuses siteConfig.ftpsState),
// and every app setting the code reads. No connection string carries a key.
param name string
param location string
param tags object
param identityId string
param identityClientId string
param storageAccountName string
param blobEndpoint string
param queueEndpoint string
param tableEndpoint string
param deploymentContainerUrl string
param applicationInsightsConnectionString string
param keyVaultUri string
param subnetId string = ''
param networkIsolation bool = false
@description('With networkIsolation: one public IP (the deployer\'s) allowed in for the post-deployment steps; empty: none.')
param allowedIpAddress string = ''
param maximumInstanceCount int
param instanceMemoryMB int
param appSettings object

var storageIdentity = {
  credential: 'managedidentity'
  clientId: identityClientId
}
var baseSettings = {
  AzureWebJobsStorage__blobServiceUri: blobEndpoint
  AzureWebJobsStorage__queueServiceUri: queueEndpoint
  AzureWebJobsStorage__tableServiceUri: tableEndpoint
  AzureWebJobsStorage__credential: storageIdentity.credential
  AzureWebJobsStorage__clientId: storageIdentity.clientId
  ALERTS_STORAGE__blobServiceUri: blobEndpoint
  ALERTS_STORAGE__queueServiceUri: queueEndpoint
  ALERTS_STORAGE__tableServiceUri: tableEndpoint
  ALERTS_STORAGE__credential: storageIdentity.credential
  ALERTS_STORAGE__clientId: storageIdentity.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // The worker's OpenTelemetry capability (with host.json's telemetryMode): the worker installs the distro (its
  // exporter takes the identity from the authentication string) for the app's loggers, and the host no longer
  // forwards the worker's log records, so each reaches Application Insights once (docs/operations.md, Logs).
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
  PYTHON_AZURE_MONITOR_LOGGER_NAME: 'shared'
  AZURE_CLIENT_ID: identityClientId
  KEY_VAULT_URL: keyVaultUri
  KEY_VAULT_CREDENTIAL: 'managed_identity'
}
var allSettings = union(baseSettings, appSettings)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: the Flex Consumption plan (FC1) does not take the zoneRedundant property this check reads; instances are placed by the platform
  name: 'plan-${name}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

var deployerRules = (networkIsolation && !empty(allowedIpAddress)) ? [
  {
    name: 'deployer'
    action: 'Allow'
    priority: 100
    ipAddress: '${allowedIpAddress}/32'
  }
] : []

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: public network access is Disabled with networkIsolation; without it, deployment (azd, zip deploy) needs the SCM endpoint, and the app exposes no HTTP function
  // checkov:skip=CKV_AZURE_17: no HTTP function: the app has queue and timer triggers only, so there is no inbound request to authenticate by client certificate
  // checkov:skip=CKV_AZURE_212: event-driven on Flex Consumption: alerts wait durably in the queue while instances scale from zero; always-ready instances would bill continuously for nothing
  // checkov:skip=CKV_AZURE_213: no HTTP endpoint to probe: health shows in the alert rules (poison, deferred, stale sync, auth failures)
  // checkov:skip=CKV_AZURE_78: Flex Consumption refuses siteConfig.ftpsState (docs/platform-checks.md); FTP is off through basicPublishingCredentialsPolicies/ftp below
  name: 'func-${name}'
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: (networkIsolation && empty(allowedIpAddress)) ? 'Disabled' : 'Enabled'
    virtualNetworkSubnetId: empty(subnetId) ? null : subnetId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      http20Enabled: true
      ipSecurityRestrictionsDefaultAction: networkIsolation ? 'Deny' : 'Allow'
      scmIpSecurityRestrictionsDefaultAction: networkIsolation ? 'Deny' : 'Allow'
      ipSecurityRestrictions: deployerRules
      scmIpSecurityRestrictions: deployerRules
      appSettings: [for setting in items(allSettings): {
        name: setting.key
        value: string(setting.value)
      }]
    }
  }
}

resource ftp 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scm 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output id string = site.id
output defaultHostName string = site.properties.defaultHostName
output storageAccountName string = storageAccountName
