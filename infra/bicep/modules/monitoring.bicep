// Log Analytics and Application Insights with local (key) authentication disabled: telemetry is
// accepted only from identities holding Monitoring Metrics Publisher.
param name string
param location string
param tags object
@minValue(30)
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${name}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${name}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
  }
}

// The operations workbook (docs/operations.md, "The workbook"): a shared workbook on Application Insights, its
// tiles the app's own metrics. Its name must be a GUID; the KQL lives in workbook/operations.json.
var workbookDisplayName = 'Defender for IoT → ServiceNow operations (${name})'

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(insights.id, 'operations-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: workbookDisplayName
    category: 'workbook'
    version: 'Notebook/1.0'
    sourceId: insights.id
    serializedData: replace(loadTextContent('../workbook/operations.json'), '__APPLICATION_INSIGHTS_ID__', insights.id)
  }
}

output applicationInsightsId string = insights.id
output workbookId string = workbook.id
output workbookName string = workbookDisplayName
output applicationInsightsName string = insights.name
output connectionString string = insights.properties.ConnectionString
output workspaceId string = workspace.id
