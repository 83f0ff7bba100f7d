"""A local Azure Functions host for Python-v2-model apps (Core Tools is not available here).

Serves a ``FunctionApp`` generically: HTTP triggers over uvicorn, queue and blob triggers by
polling Azurite (or any storage account), timer triggers on NCRONTAB schedules, honouring
host.json. Nothing is imported here, so ``import shared.localhost.azurite`` stays light.

Modules:

- ``host``: ``LocalHost``, one served app (start/stop/serve).
- ``runner``: ``HostThread`` (in-process, for tests), ``HostProcess`` (a child process, for
  stack launchers), ``wait_for_http``.
- ``cli`` / ``__main__``: ``python -m shared.localhost --app function_app:app ...``.
- ``azurite``: ``AzuriteProcess``, ``StorageEndpoints``, ``azurite()``; ``ports``:
  ``free_ports``, ``wait_for_port``.
- ``settings``: ``LocalHostSettings``; ``hostjson``: ``HostConfig``; ``auth``: ``HostKeys``.
- Internals: ``index`` (FunctionApp → definitions), ``registry`` (definitions → served
  triggers), ``routes``, ``http``, ``invocation``, ``context``, ``bindings``,
  ``expressions``, ``storage``, ``queues``, ``blobs``, ``ncrontab``, ``timers``.
"""
