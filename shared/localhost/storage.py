"""Storage accounts named by bindings' ``connection`` settings, with clients made once.

A binding's ``connection`` names an *app setting* holding a connection string, as on Azure:
``connection="AzureWebJobsStorage"`` reads the setting ``AzureWebJobsStorage``; an empty
name means ``AzureWebJobsStorage``; a name ``X`` that is not a setting falls back to
``AzureWebJobsX``. Identity-based connections (``X__serviceUri``) are not supported locally.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob.aio import BlobServiceClient, ContainerClient
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from shared.localhost.settings import DEFAULT_CONNECTION

__all__ = [
    "DEFAULT_CONNECTION",
    "StorageAccounts",
    "ensure_container",
    "ensure_queue",
    "resolve_connection",
]


def resolve_connection(app_settings: Mapping[str, str], name: str | None) -> str:
    """The connection string that the binding connection ``name`` refers to.

    Raises ``KeyError`` naming the settings that were looked for.
    """
    setting = name or DEFAULT_CONNECTION
    for candidate in (setting, f"AzureWebJobs{setting}"):
        value = app_settings.get(candidate)
        if value:
            return value
    raise KeyError(
        f"app setting {setting!r} (or 'AzureWebJobs{setting}') holds no connection string; "
        "set it in the environment or pass --storage for AzureWebJobsStorage"
    )


async def ensure_queue(client: QueueClient) -> None:
    """Create the queue unless it exists."""
    with contextlib.suppress(ResourceExistsError):
        await client.create_queue()


async def ensure_container(client: ContainerClient) -> None:
    """Create the container unless it exists."""
    with contextlib.suppress(ResourceExistsError):
        await client.create_container()


class StorageAccounts:
    """Async blob and queue clients per connection string, created on first use and closed
    together. Create and use one inside a single event loop."""

    def __init__(self, app_settings: Mapping[str, str]) -> None:
        self._settings = dict(app_settings)
        self._blob_services: dict[str, BlobServiceClient] = {}
        self._queue_services: dict[str, QueueServiceClient] = {}
        self._queues: dict[tuple[str, str], QueueClient] = {}

    def connection_string(self, connection: str | None) -> str:
        """See ``resolve_connection``."""
        return resolve_connection(self._settings, connection)

    def blob_service(self, connection: str | None) -> BlobServiceClient:
        """The blob service client of a connection."""
        conn = self.connection_string(connection)
        client = self._blob_services.get(conn)
        if client is None:
            client = BlobServiceClient.from_connection_string(conn)
            self._blob_services[conn] = client
        return client

    def container(self, connection: str | None, container: str) -> ContainerClient:
        """A container client (cheap; shares the service client's pipeline)."""
        return self.blob_service(connection).get_container_client(container)

    def queue(self, connection: str | None, queue_name: str) -> QueueClient:
        """The client of one queue, sending and receiving message text unencoded."""
        conn = self.connection_string(connection)
        key = (conn, queue_name)
        client = self._queues.get(key)
        if client is None:
            service = self._queue_services.get(conn)
            if service is None:
                service = QueueServiceClient.from_connection_string(conn)
                self._queue_services[conn] = service
            client = service.get_queue_client(queue_name)
            self._queues[key] = client
        return client

    async def close(self) -> None:
        """Close every client made so far."""
        for queue in self._queues.values():
            await queue.close()
        for queue_service in self._queue_services.values():
            await queue_service.close()
        for blob_service in self._blob_services.values():
            await blob_service.close()
        self._queues.clear()
        self._queue_services.clear()
        self._blob_services.clear()
