// Log Analytics workspace + workspace-based Application Insights with local (key) auth
// disabled: telemetry is accepted only with an Entra token, so the apps send it with their
// managed identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING) and need the Monitoring
// Metrics Publisher role on this component (granted in roles.bicep).
// Schemas: learn.microsoft.com/azure/templates/microsoft.operationalinsights/workspaces,
// .../microsoft.insights/components (properties.DisableLocalAuth).

@description('Azure region.')
param location string

@description('Name prefix of the resources.')
param baseName string

@description('Tags for every resource.')
param tags object

@description('Days Log Analytics keeps data.')
@minValue(30)
param retentionInDays int = 30

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${baseName}'
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      // Queries need RBAC on the workspace or the resource, never the shared key.
      enableLogAccessUsingOnlyResourcePermissions: true
      disableLocalAuth: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${baseName}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    DisableLocalAuth: true
    IngestionMode: 'LogAnalytics'
  }
}

@description('Resource id of the Log Analytics workspace.')
output workspaceId string = workspace.id

@description('Name of the Application Insights component.')
output appInsightsName string = appInsights.name

// The connection string identifies the component (instrumentation key + ingestion
// endpoint); it is not a credential: with DisableLocalAuth ingestion needs an Entra token.
@description('Application Insights connection string (not a secret: local auth is off).')
output appInsightsConnectionString string = appInsights.properties.ConnectionString
