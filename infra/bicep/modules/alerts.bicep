// Alert rules for what an operator must act on, as scheduled queries over the app's own metrics
// (OpenTelemetry → Application Insights customMetrics). Each query ends in exactly one row, so
// "nothing happened" (no successful sync) is a value the rule can compare, not missing data.
param name string
param location string
param tags object
param applicationInsightsId string
param actionGroupId string
param deviceSyncEnabled bool
param deviceSyncFrequencyMinutes int
param deferredThreshold int
param refreshTokenWarningDays int
param authFailureThreshold int
@description('The operations workbook\'s display name, named in every rule\'s description (empty: none).')
param workbookName string = ''

// The stale-sync rule looks back over twice the sync's frequency, rounded up to a window the service accepts
// (PT5M … P2D: docs/platform-checks.md); its evaluation frequency is never longer than its window.
var twice = 2 * deviceSyncFrequencyMinutes
var staleWindow = (twice <= 10) ? 'PT10M' : ((twice <= 15) ? 'PT15M' : ((twice <= 30) ? 'PT30M' : ((twice <= 45) ? 'PT45M' : ((twice <= 60) ? 'PT1H' : ((twice <= 120) ? 'PT2H' : ((twice <= 180) ? 'PT3H' : ((twice <= 240) ? 'PT4H' : ((twice <= 300) ? 'PT5H' : ((twice <= 360) ? 'PT6H' : ((twice <= 1440) ? 'P1D' : 'P2D'))))))))))
var staleFrequency = (twice <= 10) ? 'PT10M' : 'PT15M'
var actions = {
  actionGroups: empty(actionGroupId) ? [] : [
    actionGroupId
  ]
}
var rules = [
  {
    key: 'poisoned'
    enabled: true
    severity: 1
    window: 'PT15M'
    frequency: 'PT5M'
    title: 'Defender for IoT alerts went to the poison queue'
    description: 'Alerts that can never be forwarded (invalid, refused by ServiceNow, or past their maximum age) are in the poison queue. List them with `python -m shared poison list`; replay with `poison replay`.'
    query: 'customMetrics | where name == "alerts.poisoned" | summarize value = sum(valueSum) | union (print value = 0.0) | summarize value = sum(value)'
    operator: 'GreaterThan'
    threshold: 0
  }
  {
    // The host poisons messages itself (maxDequeueCount, undecodable bodies) with a log line only, which
    // alerts.poisoned never counts: the poison queue's depth (alert_groups reads it every 30 s) sees them all,
    // and keeps firing until the queue is replayed or cleared.
    key: 'poison-depth'
    enabled: true
    severity: 1
    window: 'PT15M'
    frequency: 'PT5M'
    title: 'Messages are waiting in the poison queue'
    description: 'The poison queue holds messages, put there by the app or by the Functions host (after maxDequeueCount, or an undecodable body). List them with `python -m shared poison list`; replay with `poison replay`.'
    query: 'customMetrics | where name == "queue.depth" and tostring(customDimensions.queue) == "poison" | summarize value = max(value) | union (print value = 0.0) | summarize value = max(value)'
    operator: 'GreaterThan'
    threshold: 0
  }
  {
    key: 'deferred'
    enabled: true
    severity: 2
    window: 'PT1H'
    frequency: 'PT15M'
    title: 'Defender for IoT alerts are piling up as deferred'
    description: 'ServiceNow, Key Vault or the credentials keep failing: alerts are deferred (nothing is lost yet, but they age towards the poison queue). See the traces for the reason.'
    query: 'customMetrics | where name == "alerts.deferred" | summarize value = sum(valueSum) | union (print value = 0.0) | summarize value = sum(value)'
    operator: 'GreaterThan'
    threshold: deferredThreshold
  }
  {
    key: 'stale-sync'
    enabled: deviceSyncEnabled
    severity: 2
    window: staleWindow
    frequency: staleFrequency
    title: 'The device sync is stale'
    description: 'No successful device sync in (at least) twice its frequency. `python -m shared sync status` shows the last one and why it failed.'
    query: 'customMetrics | where name == "device_sync.runs" and tostring(customDimensions.result) == "succeeded" | summarize value = sum(valueSum) | union (print value = 0.0) | summarize value = sum(value)'
    operator: 'LessThan'
    threshold: 1
  }
  {
    key: 'refresh-token-expiry'
    enabled: true
    severity: 2
    window: 'PT1H'
    frequency: 'PT1H'
    title: 'A ServiceNow refresh token expires soon'
    description: 'A person must sign the connection in again before it expires: `python -m shared connect <connection>`.'
    query: 'customMetrics | where name == "servicenow.refresh_token.days_left" | summarize value = min(valueMin) | union (print value = 100000.0) | summarize value = min(value)'
    operator: 'LessThan'
    threshold: refreshTokenWarningDays
  }
  {
    key: 'auth-failures'
    enabled: true
    severity: 1
    window: 'PT30M'
    frequency: 'PT5M'
    title: 'ServiceNow keeps refusing the credentials'
    description: 'Token refreshes fail or alerts are deferred for authentication: a revoked refresh token or a rotated password. Run `python -m shared connect <connection>`.'
    query: 'customMetrics | where (name == "alerts.deferred" and tostring(customDimensions.reason) == "auth") or name == "servicenow.token_refresh.failures" | summarize value = sum(valueSum) | union (print value = 0.0) | summarize value = sum(value)'
    operator: 'GreaterThan'
    threshold: authFailureThreshold
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for rule in rules: {
  name: 'alert-${name}-${rule.key}'
  location: location
  tags: tags
  properties: {
    displayName: rule.title
    description: empty(workbookName) ? rule.description : '${rule.description} Workbook: "${workbookName}" (Application Insights, Workbooks).'
    severity: rule.severity
    enabled: rule.enabled
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    autoMitigate: true
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'value'
          operator: rule.operator
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: actions
  }
}]

output ruleNames array = [for (rule, i) in rules: alertRules[i].name]
