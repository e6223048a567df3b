using 'main.bicep'

// A worked example: one OAuth connection to a developer instance, the device sync every hour, and the
// alert intake from cloud-connected sensors in one subscription (grant read access with
// defender-reader.bicep; see the README's deployment steps).
param name = 'dfiotsn'
param serviceNowConnections = '[{"name": "default", "instance_url": "https://dev12345.service-now.com", "auth": "oauth", "client_id": "0123456789abcdef0123456789abcdef", "username": "svc_defender"}]'
param deviceSyncEnabled = true
param deviceSyncFrequencyMinutes = 60
param consoleUrl = 'https://defender-console.plant.example'
param defenderSources = '[{"name": "cloud", "kind": "cloud", "subscriptions": ["00000000-0000-0000-0000-000000000000"]}]'
param tags = {
  workload: 'defender-iot-servicenow'
}
