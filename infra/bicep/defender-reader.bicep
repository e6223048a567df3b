// Read access to Defender for IoT's data in one subscription, for the app's managed identity: what the
// alert intake needs to query Azure Resource Graph (a cloud source in defenderSources). A resource-group
// deployment cannot assign roles at subscription scope, so this is deployed per subscription:
//   az deployment sub create -l <location> -f infra/bicep/defender-reader.bicep \
//     -p principalId=<the identity's principalId output by main.bicep>
// A custom role with only Microsoft.IoTSecurity/*/read, rather than Reader, which would show the app every
// resource in the subscription.
targetScope = 'subscription'

@description('The principal id of the Function app\'s user-assigned managed identity (main.bicep output identityPrincipalId).')
param principalId string

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

output roleDefinitionId string = reader.id
