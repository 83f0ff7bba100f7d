// Azure Container Registry for the scoring image. The admin user is disabled: the scoring
// apps pull with their managed identity (AcrPull, roles.bicep), `az acr build` pushes with
// the deployer's Entra identity.
// Schema: learn.microsoft.com/azure/templates/microsoft.containerregistry/registries

@description('Azure region.')
param location string

@description('Registry name (5-50 letters and digits).')
@minLength(5)
@maxLength(50)
param name string

@description('Tags for every resource.')
param tags object

@description('Registry SKU. Premium is needed for private endpoints, geo-replication and retention policies.')
@allowed([
  'Basic'
  'Standard'
  'Premium'
])
param sku string = 'Standard'

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
  }
  // checkov:skip=CKV_AZURE_139: the public endpoint stays on because ACR Tasks (`az acr build`) and serverless GPU container apps without a VNet use it; it is not anonymous: the admin user and anonymous pull are off, every push and pull needs Entra RBAC.
  // checkov:skip=CKV_AZURE_166: quarantine is a Premium-only preview feature; the image is built by `az acr build` from this repository, not pushed by third parties.
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

@description('Registry name.')
output name string = registry.name

@description('Registry resource id.')
output id string = registry.id

@description('Registry login server (<name>.azurecr.io).')
output loginServer string = registry.properties.loginServer
