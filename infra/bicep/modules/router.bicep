// The router: the endpoint's stable URL. One Python 3.11 function app (APP_ROLE=router) on
// a Flex Consumption (FC1) plan, scaling on HTTP, code deployed as a zip into the
// `deployments` blob container that the app reads with its managed identity.
// Schemas and shape: learn.microsoft.com/azure/templates/microsoft.web/sites
// (properties.functionAppConfig: deployment.storage, scaleAndConcurrency, runtime), and
// Azure-Samples/azure-functions-flex-consumption-samples IaC/bicep/core/host/function.bicep.
// Flex Consumption takes runtime and version from functionAppConfig.runtime; the
// FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION app settings are not used on it.
// Host storage is identity-based (AzureWebJobsStorage__accountName / __credential /
// __clientId, learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity):
// no connection string, no account key anywhere.

@description('Azure region.')
param location string

@description('Name prefix of the resources.')
param baseName string

@description('Tags for every resource.')
param tags object

@description('Storage account name (host storage, code packages, endpoints table).')
param storageAccountName string

@description('Blob endpoint of the storage account (https://<account>.blob.<suffix>/).')
param blobEndpoint string

@description('Table endpoint of the storage account: SCOREFN_ROUTER_TABLES_URL, SCOREFN_BATCH_TABLES_URL.')
param tableEndpoint string

@description('Queue endpoint of the storage account: SCOREFN_BATCH_QUEUES_URL (the job API sends plan messages).')
param queueEndpoint string

@description('Container holding the router code package.')
param deploymentContainer string = 'deployments'

@description('Router managed identity: resource id.')
param identityId string

@description('Router managed identity: client id.')
param identityClientId string

@description('Application Insights connection string (not a secret: local auth is off).')
param appInsightsConnectionString string

@description('Always-ready instances for the HTTP trigger group (0 = scale from zero).')
@minValue(0)
param alwaysReadyInstances int = 0

@description('Most instances the router scales out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory per instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Zone-redundant Flex Consumption plan (only in regions that support it).')
param zoneRedundant bool = false

@description('RouterSettings values (shared/settings.py, prefix SCOREFN_ROUTER_), keyed by field name.')
param settings object

@description('BatchSettings values (prefix SCOREFN_BATCH_), keyed by field name: the job API uses the same containers, jobs table and plan queues as the scoring apps.')
param batchSettings object

@description('Audience of hop authentication: forwarded requests carry a token for it from the router identity (SCOREFN_ROUTER_HOP_AUDIENCE).')
param hopAudience string

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${baseName}-router'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  // checkov:skip=CKV_AZURE_225: zone redundancy is the zoneRedundant parameter (off by default: not every Flex Consumption region supports it).
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-${baseName}-router'
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  // checkov:skip=CKV_AZURE_17: client certificates are not how callers authenticate: the router validates Entra ID bearer tokens (or endpoint keys) itself.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero by design; alwaysReadyInstances keeps warm instances where cold starts matter.
  // checkov:skip=CKV_AZURE_213: App Service health check is not available on Flex Consumption; the platform replaces failed instances and the router fails over between deployments itself.
  // checkov:skip=CKV_AZURE_222: the router is the public endpoint of the system; callers are authenticated per request by the router (shared/auth).
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
        alwaysReady: (alwaysReadyInstances > 0) ? [
          {
            name: 'http'
            instanceCount: alwaysReadyInstances
          }
        ] : []
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
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
          value: 'router'
        }
        {
          name: 'SCOREFN_ROUTER_TABLES_URL'
          value: tableEndpoint
        }
        {
          name: 'SCOREFN_ROUTER_CONFIG_TTL_S'
          value: string(settings.config_ttl_s)
        }
        {
          name: 'SCOREFN_ROUTER_BLOBS_URL'
          value: blobEndpoint
        }
        {
          name: 'SCOREFN_ROUTER_STATE_FLUSH_S'
          value: string(settings.state_flush_s)
        }
        {
          name: 'SCOREFN_ROUTER_OUTCOME_BUCKET_S'
          value: string(settings.outcome_bucket_s)
        }
        {
          name: 'SCOREFN_ROUTER_ROLLOUT_SCHEDULE'
          value: string(settings.rollout_schedule)
        }
        {
          name: 'SCOREFN_ROUTER_ROLLOUT_LEASE_S'
          value: string(settings.rollout_lease_s)
        }
        {
          name: 'SCOREFN_ROUTER_TIMEOUT_S'
          value: string(settings.timeout_s)
        }
        {
          name: 'SCOREFN_ROUTER_CONNECT_TIMEOUT_S'
          value: string(settings.connect_timeout_s)
        }
        {
          name: 'SCOREFN_ROUTER_MAX_CONNECTIONS'
          value: string(settings.max_connections)
        }
        {
          name: 'SCOREFN_ROUTER_MAX_CONCURRENT'
          value: string(settings.max_concurrent)
        }
        {
          name: 'SCOREFN_ROUTER_MIRROR_MAX_IN_FLIGHT'
          value: string(settings.mirror_max_in_flight)
        }
        {
          name: 'SCOREFN_ROUTER_MIRROR_TIMEOUT_S'
          value: string(settings.mirror_timeout_s)
        }
        {
          name: 'SCOREFN_ROUTER_MAX_BODY_BYTES'
          value: string(settings.max_body_bytes)
        }
        {
          name: 'SCOREFN_ROUTER_HOP_AUDIENCE'
          value: hopAudience
        }
        {
          // Hop tokens come from the router's user-assigned identity.
          name: 'SCOREFN_ROUTER_HOP_CLIENT_ID'
          value: identityClientId
        }
        {
          // The job API: batch storage by identity (shared keys are disabled).
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
          // Plan messages go to 'batch-plans-<deployment>', the queue each scoring app
          // listens on (the same setting there).
          name: 'SCOREFN_BATCH_PLAN_QUEUE'
          value: 'batch-plans-{deployment}'
        }
        {
          // Not used by the router: resume sends chunks to the queue each job recorded
          // (chunks-<deployment>); set so both apps read one BatchSettings.
          name: 'SCOREFN_BATCH_QUEUE'
          value: 'batch-chunks'
        }
        {
          // The remaining BatchSettings steer planning and scoring on the scoring apps; the
          // router gets the same values so both apps read one BatchSettings.
          name: 'SCOREFN_BATCH_ENDPOINTS'
          value: ''
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
        {
          name: 'SCOREFN_TELEMETRY_COLLECT_BLOBS_URL'
          value: blobEndpoint
        }
        {
          name: 'SCOREFN_TELEMETRY_COLLECT_CLIENT_ID'
          value: identityClientId
        }
      ]
    }
  }
}

@description('Router app name.')
output name string = app.name

@description('Router base URL.')
output url string = 'https://${app.properties.defaultHostName}'
