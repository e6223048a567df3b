using 'main.bicep'

// A worked example: one OAuth connection to a developer instance, the device sync every hour and the
// alert intake, from cloud-connected sensors in one subscription (grant read access with
// defender-reader.bicep) and from one locally managed sensor (its token: the sensorApiTokens parameter
// or `az keyvault secret set`; see the README's deployment steps).
param name = 'dfiotsn'
param serviceNowConnections = '[{"name": "default", "instance_url": "https://dev12345.service-now.com", "auth": "oauth", "client_id": "0123456789abcdef0123456789abcdef", "username": "svc_defender"}]'
param deviceSyncEnabled = true
param deviceSyncFrequencyMinutes = 60
param defenderSources = '[{"name": "cloud", "kind": "cloud", "subscriptions": ["00000000-0000-0000-0000-000000000000"]}, {"name": "line-4", "kind": "sensor", "url": "https://10.1.4.5", "site": "Plant B", "zone": "Line 4"}]'
// Azure reaches the locally managed sensor line-4 through the hub firewall (the VNet must be peered with the hub).
param sensorNetworkPrefixes = ['10.1.4.0/24']
param sensorNextHopIp = '10.0.0.4'
param tags = {
  workload: 'defender-iot-servicenow'
}
