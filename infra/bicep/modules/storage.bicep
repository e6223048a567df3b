// One storage account for the host and the app: no shared keys, no public blobs, TLS 1.2. It holds
// the alerts queue and its poison queue, the ledger and device-sync tables, the rules container and
// the deployment package container.
param name string
param location string
param tags object
param alertsQueueName string
param ledgerTableName string
param syncStateTableName string
param intakeStateTableName string
param rulesContainerName string
param deploymentContainerName string
param networkIsolation bool
@description('With networkIsolation: one public IP (the deployer\'s) allowed in for the post-deployment steps; empty: none.')
param allowedIpAddress string = ''
@description('Redundancy (main.bicep storageSku): locally redundant by default, which every region offers.')
param skuName string = 'Standard_LRS'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_206: locally redundant by default because zone- and geo-redundant SKUs exist only in some regions; main.bicep's storageSku takes Standard_ZRS, Standard_GRS or Standard_GZRS where the region has them
  // checkov:skip=CKV_AZURE_35: defaultAction is Deny with networkIsolation; without it the Flex Consumption app reaches storage over its public endpoint, identity-only (shared keys are disabled)
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: (networkIsolation && empty(allowedIpAddress)) ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: networkIsolation ? 'Deny' : 'Allow'
      ipRules: (networkIsolation && !empty(allowedIpAddress)) ? [
        {
          value: allowedIpAddress
          action: 'Allow'
        }
      ] : []
    }
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource rulesContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: rulesContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource alertsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queues
  name: alertsQueueName
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queues
  name: '${alertsQueueName}-poison'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tables
  name: ledgerTableName
}

resource syncStateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tables
  name: syncStateTableName
}

resource intakeStateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tables
  name: intakeStateTableName
}

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output deploymentContainerUrl string = '${account.properties.primaryEndpoints.blob}${deploymentContainerName}'
output alertsQueueId string = alertsQueue.id
output poisonQueueId string = poisonQueue.id
output ledgerTableId string = ledgerTable.id
output syncStateTableId string = syncStateTable.id
output intakeStateTableId string = intakeStateTable.id
