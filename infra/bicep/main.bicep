// Defender for IoT → ServiceNow: the whole deployment. Identity only (no keys or connection strings),
// least privilege per resource, monitored. Deploy with `azd up` or `az deployment group create`.
targetScope = 'resourceGroup'

@description('The deployment\'s name (azd: the environment name; any name azd accepts, 1-64 letters, digits and - _ . ( )). Every resource name is derived from it, within each resource type\'s rules.')
@minLength(1)
@maxLength(64)
param name string

param location string = resourceGroup().location
param tags object = {}

@description('JSON list of ServiceNow connections, e.g. [{"name":"default","instance_url":"https://dev12345.service-now.com","auth":"oauth","client_id":"…","username":"svc_defender"}]')
param serviceNowConnections string

@description('HTTPS proxy for all ServiceNow traffic, http(s)://host:port (empty: none).')
param serviceNowProxyUrl string = ''
param serviceNowConnectTimeoutSeconds int = 5
param serviceNowReadTimeoutSeconds int = 30
param serviceNowRetryBudgetSeconds int = 30
param serviceNowMaxAttempts int = 5
@description('A PEM bundle shipped in the app package, for a TLS-inspecting proxy (empty: system CAs).')
param serviceNowCaBundle string = ''

param alertsQueueName string = 'alerts'
param ledgerTableName string = 'forwardedalerts'
param rulesContainerName string = 'rules'
param forwardingMaxAgeHours int = 24
param forwardingRetryBaseSeconds int = 30
param forwardingRetryMaxSeconds int = 900
@description('Seconds after which a claim on an alert is taken for a crashed worker\'s and recovered; longer than one ServiceNow write can take.')
@minValue(5)
param forwardingClaimSeconds int = 300
@description('How often (seconds) the forwarder looks for a new rules document; 0 looks on every alert.')
param forwardingRulesCheckSeconds int = 30

@description('NCRONTAB (UTC) of the token_refresh timer.')
param tokenRefreshSchedule string = '0 */10 * * * *'
param tokenRenewBeforeMinutes int = 20
param refreshTokenWarningDays int = 14
param refreshTokenErrorDays int = 3

@description('NCRONTAB (UTC) of the device sync tick; the sync runs when deviceSyncFrequencyMinutes have passed.')
param deviceSyncSchedule string = '0 */5 * * * *'
param deviceSyncEnabled bool = false
@minValue(5)
@maxValue(1440)
param deviceSyncFrequencyMinutes int = 60
@description('The on-premises management console, https://… (required when deviceSyncEnabled).')
param consoleUrl string = ''
param consoleProxyUrl string = ''
param consoleCaBundle string = ''
param consoleTokenSecretName string = 'defender-console-api-token'
param deviceSyncConnection string = 'default'
param deviceSyncStateTableName string = 'devicesync'
param deviceSyncDataSource string = 'MicrosoftDefenderForIoT'
@description('JSON object: device type → CMDB class, overriding the built-in map (empty: built-in).')
param deviceSyncClassMap string = ''
param deviceSyncBatchSize int = 100
param deviceSyncPageSize int = 500
@description('ServiceNow writes (IRE payloads, vulnerable-item Batch calls) the device sync keeps in flight at once, within the connection budget at low priority.')
@minValue(1)
@maxValue(64)
param deviceSyncConcurrency int = 12
@description('Hours a device may be missing from a source without a deletions feed (a sensor, the cloud) before its CI is retired.')
param deviceSyncAbsenceHours int = 24

@description('NCRONTAB (UTC) of the alert_intake timer, which collects alerts from defenderSources onto the alerts queue.')
param alertIntakeSchedule string = '0 */1 * * * *'
@description('JSON list of Defender for IoT sources, e.g. [{"name": "cloud", "kind": "cloud", "subscriptions": ["<id>"]}] (empty list: no intake). The identity needs read access to Defender for IoT in each subscription: see README.')
param defenderSources string = '[]'
param alertIntakeStateTableName string = 'alertintake'
@description('Minutes each intake read reaches back (Microsoft documents Defender data up to an hour late).')
param alertIntakeOverlapMinutes int = 60
@description('Comma-separated deviceDataSource values whose cloud devices become CIs (OtSensor, CorpSensor, Mde, MicroAgent, Other).')
param deviceSyncCloudDataSources string = 'OtSensor'

@description('Resource id of an action group notified by the alert rules (empty: rules fire without notifying).')
param actionGroupId string = ''
param deferredAlertThreshold int = 100
param authFailureThreshold int = 5

@description('VNet integration and private endpoints for storage and Key Vault.')
param networkIsolation bool = false
@description('With networkIsolation: your public IP, allowed into storage, Key Vault and the app while you run the post-deployment steps (connect, rules apply, verify). Deploy again without it afterwards.')
param deployerIpAddress string = ''
@description('Your principal (az ad signed-in-user show --query id -o tsv) to be given exactly the roles the post-deployment steps need (empty: none).')
param deployerPrincipalId string = ''
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'
@description('Changes the Key Vault\'s name. A deleted vault keeps its name for 90 days (soft delete and purge protection): to redeploy into the same resource group meanwhile, pass any new value.')
param vaultNameSalt string = ''
@description('Locally managed sensors reached from Azure: their networks\' address prefixes (turns on VNet integration) and the hub appliance that routes to them.')
param sensorNetworkPrefixes array = []
param sensorNextHopIp string = ''
@secure()
@description('Locally managed sensors\' API tokens by source name: {"line-4": "<token>"}; each becomes the Key Vault secret defender-sensor-<name>-token.')
param sensorApiTokens object = {}
@minValue(1)
@maxValue(1000)
@description('Requests the whole app may have open at once against a ServiceNow instance (its REST API semaphore: about 4 per node, plus its queue). Held at run time by every instance together (docs/servicenow-budget.md).')
param serviceNowConcurrency int = 16
@minValue(1)
@maxValue(16)
@description('Alerts one instance of the app works on at once (its queue batch; it holds twice as many messages, so its share of serviceNowConcurrency stays busy).')
param alertsPerInstance int = 4
@minValue(40)
@maxValue(1000)
@description('Flex Consumption\'s per-function instance limit. 40 is the lowest every Flex region accepts; it caps the forwarder\'s instances only (each timer scales apart), so ServiceNow\'s limit is held at run time, not by this number.')
param maximumInstanceCount int = 40
@allowed([
  'Standard_LRS'
  'Standard_GRS'
  'Standard_ZRS'
  'Standard_GZRS'
])
@description('The storage account\'s redundancy. Standard_LRS deploys in every region; Standard_ZRS and Standard_GZRS (zone-redundant: the queue survives a zone outage) only in regions with availability zones, Standard_GRS and Standard_GZRS only in regions with a paired region.')
param storageSku string = 'Standard_LRS'
@minValue(0)
@description('The app\'s own cap on ServiceNow requests an hour per connection (0: none). Set it below the instance\'s rate-limit rule: the last part of it is kept for the most severe alerts.')
param serviceNowHourlyRequests int = 0
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

var suffix = take(uniqueString(subscription().id, resourceGroup().id, name), 8)
var vaultSuffix = take(uniqueString(subscription().id, resourceGroup().id, name, vaultNameSalt), 8)
// Resource names from the deployment's name: lower-case letters and digits only (the characters every
// resource type here accepts), so any name azd accepts gives names Azure accepts (docs/platform-checks.md).
var cleanName = toLower(replace(replace(replace(replace(replace(name, '-', ''), '_', ''), '.', ''), '(', ''), ')', ''))
var baseName = empty(cleanName) ? 'dfiot' : cleanName
// 18 + 9: the site's name stays within 32 characters, the length the Functions host derives its host id from.
var resourceName = '${take(baseName, 18)}-${suffix}'
var storageAccountName = 'st${take(baseName, 14)}${suffix}'
var keyVaultName = 'kv-${take(baseName, 13)}${vaultSuffix}'
var vnetIntegration = networkIsolation || !empty(sensorNetworkPrefixes)
// An instance holds up to twice its batch (batchSize + newBatchThreshold), so its share of the ServiceNow
// budget never waits on the queue; the run-time budget (SERVICENOW_CONCURRENCY, shares from the board of live
// instances) keeps all instances together within serviceNowConcurrency (docs/servicenow-budget.md).
var queueBatchSize = alertsPerInstance
var queueNewBatchThreshold = alertsPerInstance
// The Python worker runs sync functions on one thread pool (default min(32, cores + 4): 5 on a one-core Flex
// instance): enough threads for every message the instance holds, and one for each of the four timers where
// they share an instance (other plans, the local host).
var workerThreads = queueBatchSize + queueNewBatchThreshold + 4

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${resourceName}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    name: resourceName
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    name: storageAccountName
    location: location
    tags: tags
    skuName: storageSku
    alertsQueueName: alertsQueueName
    ledgerTableName: ledgerTableName
    syncStateTableName: deviceSyncStateTableName
    intakeStateTableName: alertIntakeStateTableName
    rulesContainerName: rulesContainerName
    deploymentContainerName: 'app-package'
    networkIsolation: networkIsolation
    allowedIpAddress: deployerIpAddress
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    name: keyVaultName
    location: location
    tags: tags
    networkIsolation: networkIsolation
    allowedIpAddress: deployerIpAddress
    sensorApiTokens: sensorApiTokens
  }
}

module network 'modules/network.bicep' = if (vnetIntegration) {
  name: 'network'
  params: {
    name: resourceName
    location: location
    tags: tags
    storageAccountId: storage.outputs.id
    keyVaultId: keyVault.outputs.id
    sensorNetworkPrefixes: sensorNetworkPrefixes
    sensorNextHopIp: sensorNextHopIp
  }
}

module app 'modules/app.bicep' = {
  name: 'app'
  params: {
    name: resourceName
    location: location
    tags: tags
    identityId: identity.id
    identityClientId: identity.properties.clientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerUrl: storage.outputs.deploymentContainerUrl
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultUri: keyVault.outputs.uri
    subnetId: vnetIntegration ? network.outputs.appSubnetId : ''
    networkIsolation: networkIsolation
    allowedIpAddress: deployerIpAddress
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    appSettings: {
      ALERTS_QUEUE: alertsQueueName
      TOKEN_REFRESH_SCHEDULE: tokenRefreshSchedule
      DEVICE_SYNC_SCHEDULE: deviceSyncSchedule
      SERVICENOW_CONNECTIONS: serviceNowConnections
      SERVICENOW_PROXY_URL: serviceNowProxyUrl
      SERVICENOW_CA_BUNDLE: serviceNowCaBundle
      SERVICENOW_CONNECT_TIMEOUT_SECONDS: serviceNowConnectTimeoutSeconds
      SERVICENOW_READ_TIMEOUT_SECONDS: serviceNowReadTimeoutSeconds
      SERVICENOW_RETRY_BUDGET_SECONDS: serviceNowRetryBudgetSeconds
      SERVICENOW_MAX_ATTEMPTS: serviceNowMaxAttempts
      SERVICENOW_CONCURRENCY: serviceNowConcurrency
      SERVICENOW_HOURLY_REQUESTS: serviceNowHourlyRequests
      AzureFunctionsJobHost__extensions__queues__batchSize: queueBatchSize
      AzureFunctionsJobHost__extensions__queues__newBatchThreshold: queueNewBatchThreshold
      PYTHON_THREADPOOL_THREAD_COUNT: workerThreads
      FORWARDING_RULES_LOCATION: '${rulesContainerName}/forwarding-rules.json'
      FORWARDING_LEDGER_TABLE: ledgerTableName
      FORWARDING_MAX_AGE_HOURS: forwardingMaxAgeHours
      FORWARDING_RETRY_BASE_SECONDS: forwardingRetryBaseSeconds
      FORWARDING_RETRY_MAX_SECONDS: forwardingRetryMaxSeconds
      FORWARDING_CLAIM_SECONDS: forwardingClaimSeconds
      FORWARDING_RULES_CHECK_SECONDS: forwardingRulesCheckSeconds
      TOKEN_RENEW_BEFORE_MINUTES: tokenRenewBeforeMinutes
      TOKEN_REFRESH_WARNING_DAYS: refreshTokenWarningDays
      TOKEN_REFRESH_ERROR_DAYS: refreshTokenErrorDays
      DEVICE_SYNC_ENABLED: deviceSyncEnabled ? 'true' : 'false'
      DEVICE_SYNC_FREQUENCY_MINUTES: deviceSyncFrequencyMinutes
      CONSOLE_URL: consoleUrl
      CONSOLE_PROXY_URL: consoleProxyUrl
      CONSOLE_CA_BUNDLE: consoleCaBundle
      CONSOLE_TOKEN_SECRET: consoleTokenSecretName
      DEVICE_SYNC_CONNECTION: deviceSyncConnection
      DEVICE_SYNC_STATE_TABLE: deviceSyncStateTableName
      DEVICE_SYNC_DATA_SOURCE: deviceSyncDataSource
      DEVICE_SYNC_CLASS_MAP: deviceSyncClassMap
      DEVICE_SYNC_BATCH_SIZE: deviceSyncBatchSize
      DEVICE_SYNC_PAGE_SIZE: deviceSyncPageSize
      DEVICE_SYNC_CONCURRENCY: deviceSyncConcurrency
      DEVICE_SYNC_ABSENCE_HOURS: deviceSyncAbsenceHours
      ALERT_INTAKE_SCHEDULE: alertIntakeSchedule
      DEFENDER_SOURCES: defenderSources
      ALERT_INTAKE_STATE_TABLE: alertIntakeStateTableName
      ALERT_INTAKE_OVERLAP_MINUTES: alertIntakeOverlapMinutes
      DEVICE_SYNC_CLOUD_DATA_SOURCES: deviceSyncCloudDataSources
    }
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  params: {
    principalId: identity.properties.principalId
    storageAccountName: storage.outputs.name
    alertsQueueName: alertsQueueName
    ledgerTableName: ledgerTableName
    syncStateTableName: deviceSyncStateTableName
    intakeStateTableName: alertIntakeStateTableName
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

module deployer 'modules/deployer.bicep' = if (!empty(deployerPrincipalId)) {
  name: 'deployer'
  params: {
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    storageAccountName: storage.outputs.name
    alertsQueueName: alertsQueueName
    rulesContainerName: rulesContainerName
    ledgerTableName: ledgerTableName
    syncStateTableName: deviceSyncStateTableName
    intakeStateTableName: alertIntakeStateTableName
    keyVaultName: keyVault.outputs.name
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    name: resourceName
    location: location
    tags: tags
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    actionGroupId: actionGroupId
    deviceSyncEnabled: deviceSyncEnabled
    deviceSyncFrequencyMinutes: deviceSyncFrequencyMinutes
    deferredThreshold: deferredAlertThreshold
    refreshTokenWarningDays: refreshTokenWarningDays
    authFailureThreshold: authFailureThreshold
    workbookName: monitoring.outputs.workbookName
  }
}

output functionAppName string = app.outputs.name
output storageAccountName string = storage.outputs.name
output alertsQueueName string = alertsQueueName
output keyVaultName string = keyVault.outputs.name
output keyVaultUri string = keyVault.outputs.uri
output identityClientId string = identity.properties.clientId
output identityPrincipalId string = identity.properties.principalId
output applicationInsightsName string = monitoring.outputs.applicationInsightsName
output workbookId string = monitoring.outputs.workbookId
output workbookName string = monitoring.outputs.workbookName
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
// What the operator commands read after provisioning (azd exports outputs to its hooks by these names).
output KEY_VAULT_URL string = keyVault.outputs.uri
output ALERTS_QUEUE string = alertsQueueName
output ALERTS_STORAGE__queueServiceUri string = storage.outputs.queueEndpoint
output ALERTS_STORAGE__tableServiceUri string = storage.outputs.tableEndpoint
output ALERTS_STORAGE__blobServiceUri string = storage.outputs.blobEndpoint
output SERVICENOW_CONNECTIONS string = serviceNowConnections
output DEFENDER_SOURCES string = defenderSources
