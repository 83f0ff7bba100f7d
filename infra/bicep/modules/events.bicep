// Event Grid system topic over the storage account: the source of the blob-created events
// that drive batch scoring (blob trigger with source EventGrid). The webhook subscription
// to the batch function is created after deployment (scorefn deploy, or README "Deploy to
// Azure") because its URL carries the app's blobs_extension system key, which exists only
// once the app runs and must not be an input or output of this template.
// Schema: learn.microsoft.com/azure/templates/microsoft.eventgrid/systemtopics
// (properties.source, properties.topicType 'Microsoft.Storage.StorageAccounts').

@description('Azure region (the storage account\'s).')
param location string

@description('Name prefix of the resources.')
param baseName string

@description('Tags for every resource.')
param tags object

@description('Resource id of the storage account whose blob events are published.')
param storageAccountId string

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: 'evgt-${baseName}-storage'
  location: location
  tags: tags
  properties: {
    source: storageAccountId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

@description('System topic name (for `az eventgrid system-topic event-subscription create`).')
output name string = topic.name
