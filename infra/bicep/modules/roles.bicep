// Role assignments, each scoped to the one resource it is about (never the resource group).
// Built-in role definition ids from learn.microsoft.com/azure/role-based-access-control/built-in-roles,
// as used in Azure-Samples/azure-functions-flex-consumption-samples IaC/bicep/rbac.bicep:
//   Storage Blob Data Owner         b7e6dc6d-f1e8-4753-8033-0f276bb0955b
//   Storage Queue Data Contributor  974c5e8b-45b9-4653-ba55-5f855dd0fb88
//   Storage Table Data Contributor  0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3
//   Monitoring Metrics Publisher    3913510d-42f4-4e42-8a64-420c390055eb
//   AcrPull                         7f951dda-4ed3-4680-a7ca-43fe172d538d
// Schema: learn.microsoft.com/azure/templates/microsoft.authorization/roleassignments

@description('Storage account name.')
param storageAccountName string

@description('Application Insights component name.')
param appInsightsName string

@description('Container registry name.')
param registryName string

@description('Principal id of the router identity.')
param routerPrincipalId string

@description('Principal id of the scoring identity.')
param scoringPrincipalId string

@description('Object id of the deploying user or CI principal; empty = none. Gets Storage Table Data Contributor so `scorefn deploy` can store the endpoint spec, and Storage Blob Data Contributor to upload model packages.')
param deployerPrincipalId string = ''

@description('Principal type of deployerPrincipalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

var roleIds = {
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  metricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
}

// Router: host storage (blobs; queues and tables for the Functions host and the endpoints
// table) and telemetry. Scoring: the same storage roles (batch blobs, chunk queues, jobs
// table), telemetry, and image pulls.
var storageGrants = [
  {
    principalId: routerPrincipalId
    role: roleIds.blobDataOwner
  }
  {
    principalId: routerPrincipalId
    role: roleIds.queueDataContributor
  }
  {
    principalId: routerPrincipalId
    role: roleIds.tableDataContributor
  }
  {
    principalId: scoringPrincipalId
    role: roleIds.blobDataOwner
  }
  {
    principalId: scoringPrincipalId
    role: roleIds.queueDataContributor
  }
  {
    principalId: scoringPrincipalId
    role: roleIds.tableDataContributor
  }
]

var deployerGrants = empty(deployerPrincipalId) ? [] : [
  {
    principalId: deployerPrincipalId
    role: roleIds.tableDataContributor
  }
  {
    principalId: deployerPrincipalId
    role: roleIds.blobDataContributor
  }
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for g in storageGrants: {
  name: guid(storage.id, g.principalId, g.role)
  scope: storage
  properties: {
    principalId: g.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', g.role)
  }
}]

resource deployerRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for g in deployerGrants: {
  name: guid(storage.id, g.principalId, g.role)
  scope: storage
  properties: {
    principalId: g.principalId
    principalType: deployerPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', g.role)
  }
}]

resource metricsRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for p in [routerPrincipalId, scoringPrincipalId]: {
  name: guid(appInsights.id, p, roleIds.metricsPublisher)
  scope: appInsights
  properties: {
    principalId: p
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.metricsPublisher)
  }
}]

resource acrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, scoringPrincipalId, roleIds.acrPull)
  scope: registry
  properties: {
    principalId: scoringPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.acrPull)
  }
}
