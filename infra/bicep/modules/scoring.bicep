// Scoring: a Container Apps environment with serverless GPU workload profiles and one
// Azure Functions app per deployment (Microsoft.App/containerApps with kind 'functionapp':
// the platform wires the Functions host and derives KEDA scale rules from the triggers).
// Every app runs the same image (Dockerfile: Functions Python 3.11 + onnxruntime-gpu),
// pulled from ACR with the scoring managed identity; APP_ROLE=scoring and the deployment's
// ScoringSettings pick what it serves. Min replicas 0: a GPU is billed only while in use.
// Schemas and shape:
//   learn.microsoft.com/azure/templates/microsoft.app/managedenvironments (workloadProfiles)
//   learn.microsoft.com/azure/templates/microsoft.app/containerapps (kind, 2025-02-02-preview)
//   learn.microsoft.com/azure/container-apps/functions-overview, and
//   Azure/azure-functions-on-container-apps samples/ACAKindfunctionapp/main.bicep and
//   samples/Biceptemplates/MI_VNET_sample_native/aca.bicep (kind 'functionapp', registry
//   pull by identity, identity-based AzureWebJobsStorage__*).
// Serverless GPU profile types: Consumption-GPU-NC8as-T4 (8 vCPU, 56 GiB, 1x T4) and
// Consumption-GPU-NC24-A100 (24 vCPU, 220 GiB, 1x A100); GPU profiles can only be added
// when the environment is created, and need GPU quota in the region.

@description('Azure region (needs serverless GPU availability, e.g. swedencentral, westus3, australiaeast).')
param location string

@description('Name prefix of the resources.')
param baseName string

@description('Short unique suffix for app names.')
param suffix string

@description('Endpoint name (endpoints/<name>.yaml).')
param endpointName string

@description('Tags for every resource.')
param tags object

@description('Log Analytics workspace id for the environment logs (diagnostic settings, no shared key).')
param workspaceId string

@description('Deployments: [{name, models (array of name[:version]), compute (cpu | gpu-t4 | gpu-a100), minReplicas, maxReplicas, batching}].')
param deployments array

@description('Add the Consumption-GPU-NC8as-T4 workload profile (compute gpu-t4).')
param gpuT4 bool = true

@description('Add the Consumption-GPU-NC24-A100 workload profile (compute gpu-a100).')
param gpuA100 bool = false

@description('ACR login server.')
param registryLoginServer string

@description('Image repository in the registry.')
param imageRepository string = 'scorefn-scoring'

@description('Image tag.')
param imageTag string

@description('Scoring managed identity: resource id.')
param identityId string

@description('Scoring managed identity: client id.')
param identityClientId string

@description('Storage account name (host storage, batch blobs, queues, tables).')
param storageAccountName string

@description('Blob service endpoint of the storage account (SCOREFN_BATCH_BLOBS_URL, SCOREFN_TELEMETRY_COLLECT_BLOBS_URL): shared keys are off, so the apps reach storage with their identity.')
param blobEndpoint string

@description('Queue service endpoint of the storage account (SCOREFN_BATCH_QUEUES_URL).')
param queueEndpoint string

@description('Table service endpoint of the storage account (SCOREFN_BATCH_TABLES_URL).')
param tableEndpoint string

@description('Application Insights connection string (not a secret: local auth is off).')
param appInsightsConnectionString string

@description('ScoringSettings values shared by every deployment (shared/settings.py, prefix SCOREFN_), keyed by field name.')
param settings object

@description('BatchSettings values shared by every deployment (shared/settings.py, prefix SCOREFN_BATCH_), keyed by field name; each deployment gets its own chunk queue chunks-<deployment>.')
param batchSettings object

@description('Hop authentication: the audience of the router\'s tokens (SCOREFN_HOP_AUDIENCE).')
param hopAudience string

@description('Hop authentication: the tenant whose Entra ID issues the router\'s tokens (SCOREFN_HOP_TENANT).')
param hopTenantId string

@description('Hop authentication: client id of the router identity, the only caller let in (SCOREFN_HOP_ALLOWED_CLIENTS).')
param hopAllowedClients string

var baseProfiles = [
  {
    name: 'Consumption'
    workloadProfileType: 'Consumption'
  }
]
var t4Profiles = gpuT4 ? [
  {
    name: 'gpu-t4'
    workloadProfileType: 'Consumption-GPU-NC8as-T4'
  }
] : []
var a100Profiles = gpuA100 ? [
  {
    name: 'gpu-a100'
    workloadProfileType: 'Consumption-GPU-NC24-A100'
  }
] : []

// compute (endpoint spec) -> workload profile and the container size it allows.
var computeProfiles = {
  cpu: {
    profile: 'Consumption'
    cpu: 2
    memory: '4Gi'
  }
  'gpu-t4': {
    profile: 'gpu-t4'
    cpu: 8
    memory: '56Gi'
  }
  'gpu-a100': {
    profile: 'gpu-a100'
    cpu: 24
    memory: '220Gi'
  }
}

resource environment 'Microsoft.App/managedEnvironments@2025-07-01' = {
  name: 'cae-${baseName}'
  location: location
  tags: tags
  properties: {
    // Logs go to Azure Monitor and from there to the workspace through diagnostic
    // settings, so the template never reads the workspace's shared key.
    appLogsConfiguration: {
      destination: 'azure-monitor'
    }
    workloadProfiles: concat(baseProfiles, t4Profiles, a100Profiles)
  }
}

resource environmentLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: environment
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

resource apps 'Microsoft.App/containerApps@2025-02-02-preview' = [for d in deployments: {
  name: 'ca-${take(endpointName, 10)}-${take(d.name, 10)}-${suffix}'
  location: location
  tags: union(tags, {
    'scorefn-deployment': d.name
  })
  kind: 'functionapp'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    managedEnvironmentId: environment.id
    workloadProfileName: computeProfiles[d.compute].profile
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: 80
        allowInsecure: false
        transport: 'auto'
      }
      registries: [
        {
          server: registryLoginServer
          identity: identityId
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'scoring'
          image: '${registryLoginServer}/${imageRepository}:${imageTag}'
          resources: {
            cpu: computeProfiles[d.compute].cpu
            memory: computeProfiles[d.compute].memory
          }
          env: [
            {
              name: 'FUNCTIONS_WORKER_RUNTIME'
              value: 'python'
            }
            {
              name: 'AzureWebJobsStorage__accountName'
              value: storageAccountName
            }
            {
              name: 'AzureWebJobsStorage__credential'
              value: 'managedidentity'
            }
            {
              name: 'AzureWebJobsStorage__clientId'
              value: identityClientId
            }
            {
              name: 'AZURE_CLIENT_ID'
              value: identityClientId
            }
            {
              name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
              value: appInsightsConnectionString
            }
            {
              name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
              value: 'ClientId=${identityClientId};Authorization=AAD'
            }
            {
              name: 'APP_ROLE'
              value: 'scoring'
            }
            {
              name: 'SCOREFN_MODELS_DIR'
              value: settings.models_dir
            }
            {
              name: 'SCOREFN_MODELS'
              value: join(d.models, ',')
            }
            {
              name: 'SCOREFN_DEPLOYMENT'
              value: d.name
            }
            {
              // the endpoint label of the scoring metrics (scorefn stats, dashboards)
              name: 'SCOREFN_TELEMETRY_ENDPOINT'
              value: endpointName
            }
            {
              name: 'SCOREFN_MAX_BODY_BYTES'
              value: string(settings.max_body_bytes)
            }
            {
              name: 'SCOREFN_REQUEST_TIMEOUT_S'
              value: string(settings.request_timeout_s)
            }
            {
              name: 'SCOREFN_MODEL_STORE'
              value: string(settings.model_store)
            }
            {
              // Only with a model store URL (a client id without one stops start-up).
              name: 'SCOREFN_MODEL_STORE_CLIENT_ID'
              value: empty(string(settings.model_store)) ? '' : identityClientId
            }
            {
              name: 'SCOREFN_MODEL_STORE_CONTAINER'
              value: string(settings.model_store_container)
            }
            {
              name: 'SCOREFN_MODEL_STORE_MODELS'
              value: string(settings.model_store_models)
            }
            {
              name: 'SCOREFN_MODEL_STORE_REFRESH_S'
              value: string(settings.model_store_refresh_s)
            }
            {
              name: 'SCOREFN_MODEL_CACHE_DIR'
              value: string(settings.model_cache_dir)
            }
            {
              name: 'SCOREFN_MAX_LOADED_MODELS'
              value: string(settings.max_loaded_models)
            }
            {
              name: 'SCOREFN_MAX_MEMORY_MB'
              value: string(settings.max_memory_mb)
            }
            {
              name: 'SCOREFN_HOP_AUDIENCE'
              value: hopAudience
            }
            {
              name: 'SCOREFN_HOP_TENANT'
              value: hopTenantId
            }
            {
              name: 'SCOREFN_HOP_ALLOWED_CLIENTS'
              value: hopAllowedClients
            }
            {
              name: 'SCOREFN_BATCHING'
              value: string(d.batching)
            }
            {
              // GPU deployments refuse to start without a working CUDA provider.
              name: 'SCOREFN_REQUIRE_CUDA'
              value: string(d.compute != 'cpu')
            }
            {
              // Batch storage by identity (shared keys are disabled on the account).
              name: 'SCOREFN_BATCH_BLOBS_URL'
              value: blobEndpoint
            }
            {
              name: 'SCOREFN_BATCH_QUEUES_URL'
              value: queueEndpoint
            }
            {
              name: 'SCOREFN_BATCH_TABLES_URL'
              value: tableEndpoint
            }
            {
              name: 'SCOREFN_BATCH_CLIENT_ID'
              value: identityClientId
            }
            {
              // Data collection (off unless SCOREFN_TELEMETRY_COLLECT_RATE > 0) by identity.
              name: 'SCOREFN_TELEMETRY_COLLECT_BLOBS_URL'
              value: blobEndpoint
            }
            {
              name: 'SCOREFN_TELEMETRY_COLLECT_CLIENT_ID'
              value: identityClientId
            }
            {
              name: 'SCOREFN_BATCH_INPUT_CONTAINER'
              value: batchSettings.input_container
            }
            {
              name: 'SCOREFN_BATCH_OUTPUT_CONTAINER'
              value: batchSettings.output_container
            }
            {
              name: 'SCOREFN_BATCH_STAGING_CONTAINER'
              value: batchSettings.staging_container
            }
            {
              name: 'SCOREFN_BATCH_JOBS_TABLE'
              value: batchSettings.jobs_table
            }
            {
              name: 'SCOREFN_BATCH_QUEUE'
              value: 'chunks-${d.name}'
            }
            {
              // '{deployment}' is replaced by the app's SCOREFN_DEPLOYMENT; the router's
              // default of the same setting names the same queue
              name: 'SCOREFN_BATCH_PLAN_QUEUE'
              value: 'batch-plans-{deployment}'
            }
            {
              name: 'SCOREFN_BATCH_ENDPOINTS'
              value: endpointName
            }
            {
              name: 'SCOREFN_BATCH_CHUNK_BYTES'
              value: string(batchSettings.chunk_bytes)
            }
            {
              name: 'SCOREFN_BATCH_CHUNK_ROWS'
              value: string(batchSettings.chunk_rows)
            }
            {
              name: 'SCOREFN_BATCH_MAX_CHUNKS'
              value: string(batchSettings.max_chunks)
            }
            {
              name: 'SCOREFN_BATCH_ID_COLUMNS'
              value: batchSettings.id_columns
            }
            {
              name: 'SCOREFN_BATCH_ERROR_THRESHOLD'
              value: string(batchSettings.error_threshold)
            }
            {
              name: 'SCOREFN_BATCH_MAX_DEQUEUE_COUNT'
              value: string(batchSettings.max_dequeue_count)
            }
            {
              name: 'SCOREFN_BATCH_MODEL_WAIT_S'
              value: string(batchSettings.model_wait_s)
            }
            {
              name: 'SCOREFN_BATCH_MAX_CONCURRENT_CHUNKS'
              value: string(batchSettings.max_concurrent_chunks)
            }
          ]
        }
      ]
      scale: {
        minReplicas: d.minReplicas
        maxReplicas: d.maxReplicas
      }
    }
  }
}]

@description('Container Apps environment name.')
output environmentName string = environment.name

@description('One entry per deployment: {deployment, name, url}.')
output apps array = [for (d, i) in deployments: {
  deployment: d.name
  name: apps[i].name
  url: 'https://${apps[i].properties.configuration.ingress.fqdn}'
}]
