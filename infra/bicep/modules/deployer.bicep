// What the person (or pipeline) deploying needs for the operator commands the README gives them, and
// nothing more (tests/unit/test_rbac.py checks each command's storage and Key Vault calls against these):
//
// | role | scope | for |
// |---|---|---|
// | Key Vault Secrets Officer | key vault | setting the OAuth client secret and sensor tokens; `connect` writing the tokens; `verify` |
// | Storage Blob Data Contributor | rules container | `rules apply`, `rules list`, `rules dry-run` |
// | Storage Queue Data Message Sender | alerts queue | `enqueue`, `verify`'s test alert, `poison replay` |
// | Storage Queue Data Reader | alerts queue | `verify` reading the queue |
// | Storage Queue Data Contributor | poison queue | `poison list` (receives and releases) and `poison replay` (deletes); `verify` |
// | Storage Table Data Contributor | ledger, sync-state and intake-state tables | `sync run` / `sync status`, `writeback run` / `writeback status`, `verify` |
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
param ledgerTableName string
param syncStateTableName string
param intakeStateTableName string
param keyVaultName string

var roles = {
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  queueMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  queueDataReader: '19e7f393-937e-4f77-808e-94535e297925'
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
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

resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  name: '${storageAccountName}/default/${ledgerTableName}'
}

resource syncStateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  name: '${storageAccountName}/default/${syncStateTableName}'
}

resource intakeStateTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  name: '${storageAccountName}/default/${intakeStateTableName}'
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

resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(alertsQueue.id, principalId, roles.queueDataReader)
  scope: alertsQueue
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueDataReader)
  }
}

resource poisonHandler 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(poisonQueue.id, principalId, roles.queueDataContributor)
  scope: poisonQueue
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueDataContributor)
  }
}

resource tables 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for table in [ledgerTable, syncStateTable, intakeStateTable]: {
  name: guid(table.id, principalId, roles.tableDataContributor)
  scope: table
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}]
