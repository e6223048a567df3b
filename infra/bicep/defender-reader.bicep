// Read access to Defender for IoT's data in one subscription, for the app's managed identity: what the
// alert intake needs to query Azure Resource Graph (a cloud source in defenderSources). A resource-group
// deployment cannot assign roles at subscription scope, so this is deployed per subscription, by
//   infra/grant-defender-reader.sh <subscription id> <location> <identityPrincipalId output by main.bicep> [true]
// which tries again while the new role definitions replicate (RoleDefinitionDoesNotExist on a first run).
// A custom role with only Microsoft.IoTSecurity/*/read and the Resource Graph query, rather than Reader, which
// would show the app every resource in the subscription. With writeBack (the loop: a record resolved in ServiceNow closes its alert),
// a second custom role adds the alert write and learn actions, and nothing else.
targetScope = 'subscription'

@description('The principal id of the Function app\'s user-assigned managed identity (main.bicep output identityPrincipalId).')
param principalId string

@description('Grant the write-back: closing (and learning) alerts whose records were resolved in ServiceNow.')
param writeBack bool = false

var roleName = 'Defender for IoT reader (${subscription().subscriptionId})'

resource reader 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, 'defender-iot-servicenow-reader')
  properties: {
    roleName: roleName
    description: 'Reads Microsoft Defender for IoT alerts, devices, sensors and sites (Azure Resource Graph iotsecurityresources).'
    type: 'CustomRole'
    assignableScopes: [
      subscription().id
    ]
    permissions: [
      {
        actions: [
          'Microsoft.IoTSecurity/*/read'
          // The query itself (Azure Resource Graph answers with what the reads above allow).
          'Microsoft.ResourceGraph/resources/read'
        ]
        notActions: []
      }
    ]
  }
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, reader.id)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: reader.id
  }
}

resource writer 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (writeBack) {
  name: guid(subscription().id, 'defender-iot-servicenow-alert-writer')
  properties: {
    roleName: 'Defender for IoT alert closer (${subscription().subscriptionId})'
    description: 'Closes and learns Microsoft Defender for IoT alerts (the write-back of records resolved in ServiceNow).'
    type: 'CustomRole'
    assignableScopes: [
      subscription().id
    ]
    permissions: [
      {
        actions: [
          'Microsoft.IoTSecurity/locations/deviceGroups/alerts/write'
          'Microsoft.IoTSecurity/locations/deviceGroups/alerts/learn/action'
        ]
        notActions: []
      }
    ]
  }
}

resource writerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (writeBack) {
  name: guid(subscription().id, principalId, 'defender-iot-servicenow-alert-writer')
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: writer.id
  }
}

output roleDefinitionId string = reader.id
