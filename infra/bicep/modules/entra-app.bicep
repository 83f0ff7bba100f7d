// Optional Entra ID app registration for an endpoint: the API that callers request tokens
// for (audience api://scorefn-<endpoint>), with the app roles the router checks
// (auth.invoke_role / auth.admin_role of the endpoint spec). Deployed by main.bicep only
// when createEntraApp is true; needs Application.ReadWrite.All (or OwnedBy) for the
// deploying identity.
// Microsoft Graph Bicep extension, GA dynamic types:
//   learn.microsoft.com/graph/templates/bicep/reference/applications (Microsoft.Graph/applications@v1.0)
//   learn.microsoft.com/graph/templates/bicep/reference/serviceprincipals
// Note: pycep-parser 0.5.1 predates the `extension` statement; tests/infra strip that one
// line before parsing this file.
extension 'br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:1.0.0'

@description('Endpoint name: the app is scorefn-<endpoint>, its identifier URI api://scorefn-<endpoint>.')
param endpointName string

@description('App role that may score (EndpointSpec.auth.invoke_role).')
param invokeRole string = 'Endpoint.Invoke'

@description('App role that may change traffic (EndpointSpec.auth.admin_role).')
param adminRole string = 'Endpoint.Admin'

var appName = 'scorefn-${endpointName}'

resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: appName
  displayName: appName
  signInAudience: 'AzureADMyOrg'
  identifierUris: [
    'api://${appName}'
  ]
  api: {
    requestedAccessTokenVersion: 2
  }
  appRoles: [
    {
      id: guid(appName, invokeRole)
      value: invokeRole
      displayName: invokeRole
      description: 'Score through the endpoint\'s router.'
      allowedMemberTypes: [
        'User'
        'Application'
      ]
      isEnabled: true
    }
    {
      id: guid(appName, adminRole)
      value: adminRole
      displayName: adminRole
      description: 'Change the endpoint\'s traffic and mirror settings.'
      allowedMemberTypes: [
        'User'
        'Application'
      ]
      isEnabled: true
    }
  ]
}

resource servicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: app.appId
  appRoleAssignmentRequired: true
}

@description('Application (client) id: an accepted audience of the endpoint.')
output appId string = app.appId

@description('Identifier URI: the audience to list in endpoints/<name>.yaml auth.audiences.')
output audience string = 'api://${appName}'
