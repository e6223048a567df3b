// Optional network isolation: the app integrates with a VNet and reaches storage (blob, queue,
// table) and Key Vault through private endpoints, with their private DNS zones.
param name string
param location string
param tags object
param storageAccountId string
param keyVaultId string
param addressPrefix string = '10.40.0.0/24'
param appSubnetPrefix string = '10.40.0.0/26'
param endpointSubnetPrefix string = '10.40.0.64/26'
@description('Address prefixes of locally managed sensors (their OT networks), reached through sensorNextHopIp.')
param sensorNetworkPrefixes array = []
@description('Next hop to the sensors: the private IP of the firewall, VPN or ExpressRoute appliance in the hub this VNet is peered with.')
param sensorNextHopIp string = ''

// The app's outbound route to the sensors' networks: only their prefixes, through the hub's appliance.
resource sensorRoutes 'Microsoft.Network/routeTables@2023-11-01' = if (!empty(sensorNetworkPrefixes)) {
  name: 'rt-${name}-sensors'
  location: location
  tags: tags
  properties: {
    disableBgpRoutePropagation: false
    routes: [for (prefix, i) in sensorNetworkPrefixes: {
      name: 'sensors-${i}'
      properties: {
        addressPrefix: prefix
        nextHopType: 'VirtualAppliance'
        nextHopIpAddress: sensorNextHopIp
      }
    }]
  }
}

var endpoints = [
  { name: 'blob', target: storageAccountId, zone: 'privatelink.blob.${environment().suffixes.storage}' }
  { name: 'queue', target: storageAccountId, zone: 'privatelink.queue.${environment().suffixes.storage}' }
  { name: 'table', target: storageAccountId, zone: 'privatelink.table.${environment().suffixes.storage}' }
  { name: 'vault', target: keyVaultId, zone: 'privatelink.vaultcore.azure.net' }
]

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: 'vnet-${name}'
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          routeTable: empty(sensorNetworkPrefixes) ? null : {
            id: sensorRoutes.id
          }
          delegations: [
            {
              name: 'flex'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: 'endpoints'
        properties: {
          addressPrefix: endpointSubnetPrefix
        }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for endpoint in endpoints: {
  name: endpoint.zone
  location: 'global'
  tags: tags
}]

resource links 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (endpoint, i) in endpoints: {
  parent: zones[i]
  name: 'link-${name}'
  location: 'global'
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2023-11-01' = [for endpoint in endpoints: {
  name: 'pe-${name}-${endpoint.name}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: vnet.properties.subnets[1].id
    }
    privateLinkServiceConnections: [
      {
        name: endpoint.name
        properties: {
          privateLinkServiceId: endpoint.target
          groupIds: [
            endpoint.name
          ]
        }
      }
    ]
  }
}]

resource zoneGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = [for (endpoint, i) in endpoints: {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: endpoint.name
        properties: {
          privateDnsZoneId: zones[i].id
        }
      }
    ]
  }
}]

output appSubnetId string = vnet.properties.subnets[0].id
output vnetId string = vnet.id
