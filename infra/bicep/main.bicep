// scorefn in Azure: one endpoint = a router (Flex Consumption function app) in front of one
// serverless-GPU scoring app per deployment (Container Apps, kind 'functionapp'), sharing one
// storage account (models, batch blobs, chunk queues, jobs and endpoints tables), one
// registry, Application Insights, and an Event Grid system topic for batch drops.
// Identity everywhere: user-assigned managed identities + RBAC; no keys, connection strings
// or secrets in settings or outputs.
//
//   az deployment group create -g RG -f infra/bicep/main.bicep -p @infra/bicep/main.parameters.json
//   az deployment group what-if -g RG -f infra/bicep/main.bicep -p @infra/bicep/main.parameters.json
//
// `scorefn deploy --resource-group RG --endpoint endpoints/fraud.yaml` derives the
// parameters from the endpoint spec and runs the whole rollout (README "Deploy to Azure").

@description('Azure region of every resource (must offer Flex Consumption and serverless GPUs).')
param location string = resourceGroup().location

@description('Name prefix of the resources.')
@minLength(3)
@maxLength(10)
param namePrefix string = 'scorefn'

@description('Endpoint name (endpoints/<name>.yaml, lower-case).')
@minLength(1)
@maxLength(32)
param endpointName string

@description('Deployments of the endpoint: [{name, models, compute, minReplicas, maxReplicas, batching}] (from endpoints/<name>.yaml).')
param deployments array

@description('Add the Consumption-GPU-NC8as-T4 workload profile (deployments with compute gpu-t4).')
param gpuT4 bool = true

@description('Add the Consumption-GPU-NC24-A100 workload profile (deployments with compute gpu-a100).')
param gpuA100 bool = false

@description('Deploy the scoring apps. scorefn deploy runs a first pass with false (registry, storage, router, ...), builds the image into the new registry, then a second pass with true: a container app pulls its image when it is created.')
param deployScoring bool = true

@description('Tag of the scoring image in the registry (az acr build -t scorefn-scoring:<tag>).')
param imageTag string = 'latest'

@description('Always-ready router instances for HTTP (0 = scale from zero).')
@minValue(0)
param routerAlwaysReady int = 0

@description('RouterSettings overrides, keyed by field name (shared/settings.py); missing keys keep the defaults below.')
param routerSettings object = {}

@description('ScoringSettings overrides shared by the deployments, keyed by field name.')
param scoringSettings object = {}

@description('BatchSettings overrides shared by the deployments and the router (job API), keyed by field name.')
param batchSettings object = {}

@description('Object id of the deployer (user or CI principal); empty = none. Gets data-plane roles to store the endpoint spec and upload models.')
param deployerPrincipalId string = ''

@description('Principal type of deployerPrincipalId.')
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

@description('Also create the Entra app registration (modules/entra-app.bicep, Microsoft Graph extension).')
param createEntraApp bool = false

@description('Tags for every resource.')
param tags object = {}

@description('Audience of hop authentication: the router sends a token for it from its managed identity on every forwarded request; the scoring apps accept only such tokens, and only from the router identity. Default: the endpoint\'s Entra app (modules/entra-app.bicep, v2 tokens).')
param hopAudience string = 'api://scorefn-${endpointName}'

var suffix = take(uniqueString(resourceGroup().id, namePrefix, endpointName), 6)
var baseName = '${namePrefix}-${suffix}'
var allTags = union(tags, {
  'scorefn-endpoint': endpointName
})

// Same defaults as shared/settings.py (tests/infra checks the names; the values are the
// documented defaults so an unset override changes nothing).
var routerDefaults = {
  config_ttl_s: '2.0'
  timeout_s: '30.0'
  connect_timeout_s: '2.0'
  max_connections: '256'
  max_concurrent: '512'
  mirror_max_in_flight: '64'
  mirror_timeout_s: '10.0'
  max_body_bytes: '104857600'
  state_flush_s: '1.0'
  outcome_bucket_s: '10'
  rollout_schedule: '*/10 * * * * *'
  rollout_lease_s: '15'
}
var batchDefaults = {
  input_container: 'batch-input'
  output_container: 'batch-output'
  staging_container: 'batch-staging'
  jobs_table: 'jobs'
  chunk_bytes: '8388608'
  chunk_rows: '200000'
  max_chunks: '20000'
  id_columns: ''
  error_threshold: '0.1'
  max_dequeue_count: '5'
  model_wait_s: '300.0'
  max_concurrent_chunks: '2'
}
// One chunk queue (and its poison queue) per deployment: a deployment's workers must only
// see the chunks of the jobs it planned (BatchSettings.queue).
var chunkQueues = [for d in deployments: 'chunks-${d.name}']
var poisonQueues = [for d in deployments: 'chunks-${d.name}-poison']
// One plan queue per deployment (BatchSettings.plan_queue 'batch-plans-{deployment}'): the
// router's job API sends a job's plan message to the deployment that scores it.
var planQueues = [for d in deployments: 'batch-plans-${d.name}']
var planPoisonQueues = [for d in deployments: 'batch-plans-${d.name}-poison']
var scoringDefaults = {
  models_dir: '/home/site/wwwroot/models'
  max_body_bytes: '104857600'
  request_timeout_s: '30.0'
  // Many models (off unless model_store is set): the blob service URL, e.g.
  // 'https://<account>.blob.core.windows.net', read with the scoring identity.
  model_store: ''
  model_store_container: 'models'
  model_store_models: '*'
  model_store_refresh_s: '5.0'
  model_cache_dir: '.scorefn/model-cache'
  max_loaded_models: '20'
  max_memory_mb: '4096'
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    baseName: baseName
    tags: allTags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    name: 'st${replace(namePrefix, '-', '')}${suffix}'
    tags: allTags
    queues: concat(chunkQueues, poisonQueues, planQueues, planPoisonQueues)
  }
}

module identities 'modules/identities.bicep' = {
  name: 'identities'
  params: {
    location: location
    baseName: baseName
    tags: allTags
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  params: {
    location: location
    name: 'cr${replace(namePrefix, '-', '')}${suffix}'
    tags: allTags
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    storageAccountName: storage.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
    registryName: registry.outputs.name
    routerPrincipalId: identities.outputs.routerPrincipalId
    scoringPrincipalId: identities.outputs.scoringPrincipalId
    deployerPrincipalId: deployerPrincipalId
    deployerPrincipalType: deployerPrincipalType
  }
}

module router 'modules/router.bicep' = {
  name: 'router'
  dependsOn: [
    roles
  ]
  params: {
    location: location
    baseName: baseName
    tags: allTags
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    identityId: identities.outputs.routerId
    identityClientId: identities.outputs.routerClientId
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    alwaysReadyInstances: routerAlwaysReady
    hopAudience: hopAudience
    settings: union(routerDefaults, routerSettings)
    // The job API records jobs and sends plan messages in the batch storage, with the
    // same container, table and queue names as the scoring apps.
    batchSettings: union(batchDefaults, batchSettings)
  }
}

module scoring 'modules/scoring.bicep' = if (deployScoring) {
  name: 'scoring'
  // The apps pull their image at creation: AcrPull must exist first.
  dependsOn: [
    roles
  ]
  params: {
    location: location
    baseName: baseName
    suffix: suffix
    endpointName: endpointName
    tags: allTags
    workspaceId: monitoring.outputs.workspaceId
    deployments: deployments
    gpuT4: gpuT4
    gpuA100: gpuA100
    registryLoginServer: registry.outputs.loginServer
    imageTag: imageTag
    identityId: identities.outputs.scoringId
    identityClientId: identities.outputs.scoringClientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    hopAudience: hopAudience
    hopTenantId: tenant().tenantId
    hopAllowedClients: identities.outputs.routerClientId
    settings: union(scoringDefaults, scoringSettings)
    batchSettings: union(batchDefaults, batchSettings)
  }
}

module events 'modules/events.bicep' = {
  name: 'events'
  params: {
    location: location
    baseName: baseName
    tags: allTags
    storageAccountId: storage.outputs.id
  }
}

module entraApp 'modules/entra-app.bicep' = if (createEntraApp) {
  name: 'entra-app'
  params: {
    endpointName: endpointName
  }
}

@description('The endpoint\'s stable URL (router), e.g. <routerUrl>/api/endpoints/<endpoint>/score.')
output routerUrl string = router.outputs.url

@description('Router function app name (code publish target).')
output routerName string = router.outputs.name

@description('Scoring apps: [{deployment, name, url}], one per deployment.')
output scoringApps array = deployScoring ? scoring!.outputs.apps : []

@description('Storage account name.')
output storageName string = storage.outputs.name

@description('Table endpoint: where `scorefn deploy` stores the endpoint spec.')
output tablesUrl string = storage.outputs.tableEndpoint

@description('Container registry name (az acr build --registry).')
output registryName string = registry.outputs.name

@description('Container registry login server.')
output registryLoginServer string = registry.outputs.loginServer

@description('Event Grid system topic over the storage account.')
output eventGridTopicName string = events.outputs.name
