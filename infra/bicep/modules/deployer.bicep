// What the person (or pipeline) deploying needs for the steps after deployment, and nothing more:
//
// | role | scope | for |
// |---|---|---|
// | Key Vault Secrets Officer | key vault | setting the OAuth client secret and sensor tokens; `connect` writing the tokens |
// | Storage Blob Data Contributor | rules container | `rules apply` |
// | Storage Queue Data Message Sender | alerts queue | `enqueue` and `verify`'s test alert |
// | Storage Queue Data Reader | alerts and poison queues | `verify` and `poison list` reading queue metadata and messages |
// | Storage Table Data Reader | storage account | `sync status`, `writeback status`, `verify` |
param principalId string
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param principalType string = 'User'
param storageAccountName string
param alertsQueueName string
param rulesContainerName string
param keyVaultName string

var roles = {
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  queueMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  queueDataReader: '19e7f393-937e-4f77-808e-94535e297925'
  tableDataReader: '76199698-9eea-4c19-bc75-cec21354c6b6'
}

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource rulesContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  name: '${storageAccountName}/default/${rulesContainerName}'
}

resource alertsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  name: '${storageAccountName}/default/${alertsQueueName}'
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  name: '${storageAccountName}/default/${alertsQueueName}-poison'
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource secretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
  }
}

resource rulesWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(rulesContainer.id, principalId, roles.blobDataContributor)
  scope: rulesContainer
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor)
  }
}

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(alertsQueue.id, principalId, roles.queueMessageSender)
  scope: alertsQueue
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueMessageSender)
  }
}

resource readers 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for queue in [alertsQueue, poisonQueue]: {
  name: guid(queue.id, principalId, roles.queueDataReader)
  scope: queue
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueDataReader)
  }
}]

resource tables 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, roles.tableDataReader)
  scope: account
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataReader)
  }
}
