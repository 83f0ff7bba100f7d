"""Table clients of the rollout state: one service client per process, tables created
once on first use. Storage failures become ``UpstreamError`` at the callers."""

from __future__ import annotations

import threading
from typing import Final

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.data.tables import TableClient, TableServiceClient

from shared.errors import UpstreamError

__all__ = ["ARMS_TABLE", "REQUESTS_TABLE", "ROLLOUTS_TABLE", "WINDOWS_TABLE", "Tables"]

ARMS_TABLE: Final = "banditarms"
"""Bandit arm statistics: partition = endpoint, row = deployment."""
REQUESTS_TABLE: Final = "banditrequests"
"""Request id -> deployment that served it (feedback)."""
WINDOWS_TABLE: Final = "rolloutwindows"
"""Per-deployment outcomes per time bucket, per router instance."""
ROLLOUTS_TABLE: Final = "rollouts"
"""Rollout state: one entity per endpoint."""


class Tables:
    """Table clients on one storage account."""

    def __init__(self, service: TableServiceClient) -> None:
        self._service = service
        self._clients: dict[str, TableClient] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_connection_string(cls, connection_string: str) -> Tables:
        """Tables of the account of ``connection_string`` (Azurite: the dev account)."""
        return cls(TableServiceClient.from_connection_string(connection_string))

    def table(self, name: str) -> TableClient:
        """The client of table ``name``, created in storage on first use."""
        with self._lock:
            client = self._clients.get(name)
            if client is None:
                client = self._service.get_table_client(name)
                try:
                    client.create_table()
                except ResourceExistsError:
                    pass
                except AzureError as exc:
                    raise UpstreamError(
                        f"table storage is unavailable ({type(exc).__name__})"
                    ) from exc
                self._clients[name] = client
            return client

    def close(self) -> None:
        """Close every client."""
        for client in self._clients.values():
            client.close()
        self._service.close()
