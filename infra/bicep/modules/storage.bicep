// The one storage account: Functions host storage, model packages, batch input/output,
// chunk queues and the jobs / endpoints tables. Shared keys are off: every client (the
// apps, Event Grid, the deployer) authenticates with Entra ID.
// Schema: learn.microsoft.com/azure/templates/microsoft.storage/storageaccounts
// (allowSharedKeyAccess, allowBlobPublicAccess, minimumTlsVersion, supportsHttpsTrafficOnly).

@description('Azure region.')
param location string

@description('Storage account name (3-24 lower-case letters and digits).')
@minLength(3)
@maxLength(24)
param name string

@description('Tags for every resource.')
param tags object

@description('Blob containers: batch input/output/staging, model packages, router code packages.')
param containers array = [
  'batch-input'
  'batch-output'
  'batch-staging'
  'models'
  'deployments'
]

@description('Queues: batch chunks and their poison queues (host.json maxDequeueCount); main.bicep passes chunks-<deployment> and chunks-<deployment>-poison.')
param queues array = [
  'chunks'
  'chunks-poison'
]

@description('Tables: the batch job ledger and the endpoint configs the router reads.')
param tables array = [
  'jobs'
  'endpoints'
]

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  // checkov:skip=CKV_AZURE_206: LRS is the cost-appropriate default; set sku.name to Standard_ZRS or Standard_GZRS where batch data must survive a zone or region loss.
  // checkov:skip=CKV_AZURE_59: the public endpoint stays on because Flex Consumption, serverless GPU container apps and Event Grid reach the account without a VNet here; it is not anonymous: shared keys and public blob access are off, every request needs Entra RBAC.
  // checkov:skip=CKV_AZURE_35: default action Allow for the same reason as CKV_AZURE_59 (no VNet or private endpoints in this template); access is by Entra RBAC only.
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      services: {
        blob: {
          enabled: true
        }
        queue: {
          enabled: true
        }
        table: {
          enabled: true
        }
        file: {
          enabled: true
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource blobContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for c in containers: {
  parent: blobService
  name: c
  properties: {
    publicAccess: 'None'
  }
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource storageQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for q in queues: {
  parent: queueService
  name: q
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource storageTables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for t in tables: {
  parent: tableService
  name: t
}]

@description('Storage account name.')
output name string = account.name

@description('Storage account resource id.')
output id string = account.id

@description('Blob service endpoint (https://<account>.blob.<suffix>/).')
output blobEndpoint string = account.properties.primaryEndpoints.blob

@description('Table service endpoint (https://<account>.table.<suffix>/).')
output tableEndpoint string = account.properties.primaryEndpoints.table

@description('Queue service endpoint (https://<account>.queue.<suffix>/).')
output queueEndpoint string = account.properties.primaryEndpoints.queue
