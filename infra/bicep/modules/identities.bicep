// User-assigned managed identities: one for the router app, one shared by the scoring apps.
// User-assigned (not system-assigned) so the role assignments and the AcrPull grant exist
// before the apps are created: a container app pulls its image at creation time.
// Schema: learn.microsoft.com/azure/templates/microsoft.managedidentity/userassignedidentities

@description('Azure region.')
param location string

@description('Name prefix of the resources.')
param baseName string

@description('Tags for every resource.')
param tags object

resource router 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${baseName}-router'
  location: location
  tags: tags
}

resource scoring 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${baseName}-scoring'
  location: location
  tags: tags
}

@description('Router identity: resource id.')
output routerId string = router.id

@description('Router identity: client id (AZURE_CLIENT_ID, AzureWebJobsStorage__clientId).')
output routerClientId string = router.properties.clientId

@description('Router identity: principal (object) id, for role assignments.')
output routerPrincipalId string = router.properties.principalId

@description('Scoring identity: resource id.')
output scoringId string = scoring.id

@description('Scoring identity: client id.')
output scoringClientId string = scoring.properties.clientId

@description('Scoring identity: principal (object) id.')
output scoringPrincipalId string = scoring.properties.principalId
