"""Storage service clients of one role, from a connection string or from account URLs.

Locally (Azurite) a role reaches its storage account with a connection string. In Azure
the account has shared keys disabled, so a connection string cannot work there: the role
is given the account's service URLs (``https://<account>.blob.core.windows.net`` and the
queue / table ones) and reaches them with an Entra credential: azure-identity's
``ManagedIdentityCredential(client_id=...)`` when a client id is set (the app's
user-assigned identity), else ``DefaultAzureCredential``. One credential per client id
per process, shared by every client, so tokens are fetched once and cached.

``StorageClients`` checks its configuration when built (``check_storage``, also run by
the settings classes, so a wrong app setting stops start-up with a message naming it):

* URLs set: every service the role needs has its URL, each ``https://`` with a host and
  no query (no SAS token in a setting), naming that service when it is an Azure storage
  host (``<account>.blob.<suffix>`` for blobs); the connection string is not used.
* no URLs: the connection string is used; it must not be blank, and a client id then is
  a mistake (an identity that nothing uses: the URLs were forgotten).

Azure SDK imports happen when a client is asked for, so settings stay light to import.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.data.tables import TableClient, TableServiceClient
    from azure.storage.blob import BlobServiceClient, ContainerClient
    from azure.storage.queue import QueueClient, QueueServiceClient

    from shared.settings import BatchSettings, TelemetrySettings

__all__ = [
    "BATCH_NAMES",
    "COLLECT_NAMES",
    "SERVICES",
    "Service",
    "StorageClients",
    "StorageMode",
    "check_storage",
    "credential_for",
]

Service = Literal["blob", "queue", "table"]
"""A storage service."""
StorageMode = Literal["connection_string", "identity"]
"""How a role reaches its account."""
SERVICES: Final[tuple[Service, ...]] = ("blob", "queue", "table")
_AZURE_LABELS: Final = frozenset({"blob", "queue", "table", "file", "dfs", "web"})

_DEFAULT_NAMES: Final[Mapping[str, str]] = {
    "connection_string": "connection string",
    "blob": "blob service URL",
    "queue": "queue service URL",
    "table": "table service URL",
    "client_id": "client id",
}


def _name(names: Mapping[str, str], key: str) -> str:
    return names.get(key, _DEFAULT_NAMES[key])


def _check_url(url: str, service: Service, setting: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError(
            f"{setting} {url!r} is not an https:// URL; a storage account is reached with an "
            "identity only over TLS (locally, give the connection string instead)"
        )
    if not parts.hostname:
        raise ValueError(f"{setting} {url!r} names no host")
    if parts.query or parts.fragment:
        raise ValueError(
            f"{setting} must be the bare service URL, without '?...' (no SAS token in a "
            f"setting); got {parts.scheme}://{parts.netloc}{parts.path}?..."
        )
    labels = parts.hostname.split(".")
    if len(labels) > 2 and labels[1] in _AZURE_LABELS and labels[1] != service:
        raise ValueError(
            f"{setting} {url!r} is the {labels[1]} endpoint of account {labels[0]!r}; "
            f"expected its {service} endpoint https://{labels[0]}.{service}."
            + ".".join(labels[2:])
        )


def check_storage(
    *,
    connection_string: str | None,
    urls: Mapping[Service, str | None],
    client_id: str | None,
    needs: Sequence[Service] = SERVICES,
    names: Mapping[str, str] | None = None,
) -> StorageMode:
    """How a role with these settings reaches storage; ``ValueError`` naming the setting
    when the configuration is inconsistent (see the module docstring). ``names`` maps
    ``connection_string``, ``blob``, ``queue``, ``table`` and ``client_id`` to the app
    setting names used in messages."""
    names = names or {}
    given = {service: url for service, url in urls.items() if url}
    if given:
        missing = [service for service in needs if service not in given]
        if missing:
            have = ", ".join(_name(names, s) for s in given)
            raise ValueError(
                f"{have} set, so storage is reached with an identity; also set "
                + ", ".join(_name(names, s) for s in missing)
            )
        for service, url in given.items():
            _check_url(url, service, _name(names, service))
        return "identity"
    if client_id:
        raise ValueError(
            f"{_name(names, 'client_id')} is set but no service URL is "
            f"({', '.join(_name(names, s) for s in needs)}): an identity is only used with "
            "the URLs (a connection string needs none)"
        )
    if not (connection_string or "").strip():
        raise ValueError(
            f"storage is not configured: give {_name(names, 'connection_string')} (a "
            "connection string; UseDevelopmentStorage=true for Azurite) or "
            + ", ".join(_name(names, s) for s in needs)
            + " (reached with an identity)"
        )
    return "connection_string"


@functools.lru_cache(maxsize=8)
def credential_for(client_id: str | None) -> TokenCredential:
    """The process's credential for ``client_id``: ``ManagedIdentityCredential`` for a
    user-assigned identity, ``DefaultAzureCredential`` when None (built once each)."""
    if client_id:
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client_id)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


class StorageClients:
    """Blob, queue and table clients of one storage account, each built on request.

    ``options`` are keyword options of every client (retry policy, timeouts); those
    given to one call are added to them.
    """

    def __init__(
        self,
        *,
        connection_string: str | None = None,
        blobs_url: str | None = None,
        queues_url: str | None = None,
        tables_url: str | None = None,
        client_id: str | None = None,
        needs: Sequence[Service] = SERVICES,
        names: Mapping[str, str] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self._urls: dict[Service, str | None] = {
            "blob": blobs_url,
            "queue": queues_url,
            "table": tables_url,
        }
        self.mode: StorageMode = check_storage(
            connection_string=connection_string,
            urls=self._urls,
            client_id=client_id,
            needs=needs,
            names=names,
        )
        """``identity`` (URLs + credential) or ``connection_string``."""
        self._connection_string = connection_string or ""
        self._client_id = client_id or None
        self._names = dict(names or {})
        self._options = dict(options or {})

    # ------------------------------------------------------------------ from settings
    @classmethod
    def for_batch(cls, settings: BatchSettings) -> StorageClients:
        """The batch account (blobs, chunk and plan queues, jobs table) of ``settings``."""
        return cls(
            connection_string=settings.storage,
            blobs_url=settings.blobs_url,
            queues_url=settings.queues_url,
            tables_url=settings.tables_url,
            client_id=settings.client_id,
            names=BATCH_NAMES,
        )

    @classmethod
    def for_collector(
        cls, settings: TelemetrySettings, options: Mapping[str, Any] | None = None
    ) -> StorageClients:
        """The account receiving collected data (blobs only)."""
        return cls(
            connection_string=settings.collect_storage,
            blobs_url=settings.collect_blobs_url,
            client_id=settings.collect_client_id,
            needs=("blob",),
            names=COLLECT_NAMES,
            options=options,
        )

    @classmethod
    def for_blobs(
        cls,
        value: str,
        *,
        client_id: str | None = None,
        options: Mapping[str, Any] | None = None,
        setting: str = "storage",
    ) -> StorageClients:
        """Blobs from one setting holding either a blob service URL or a connection
        string (``SCOREFN_MODEL_STORE``, ``--storage``)."""
        is_url = value.strip().lower().startswith(("https://", "http://"))
        return cls(
            connection_string=None if is_url else value,
            blobs_url=value.strip().rstrip("/") if is_url else None,
            client_id=client_id,
            needs=("blob",),
            names={"connection_string": setting, "blob": setting, "client_id": "client id"},
            options=options,
        )

    # ------------------------------------------------------------------ clients
    @property
    def credential(self) -> TokenCredential | None:
        """The Entra credential in identity mode; None with a connection string."""
        return credential_for(self._client_id) if self.mode == "identity" else None

    def url(self, service: Service) -> str | None:
        """The service URL in identity mode (None with a connection string)."""
        return self._urls[service] if self.mode == "identity" else None

    def _url(self, service: Service) -> str:
        url = self._urls[service]
        if url is None:
            raise ValueError(
                f"no {_name(self._names, service)} is set; this role was configured for "
                f"{', '.join(s for s, u in self._urls.items() if u)} only"
            )
        return url

    def _merged(self, options: Mapping[str, Any]) -> dict[str, Any]:
        return {**self._options, **options}

    def blob_service(self, **options: Any) -> BlobServiceClient:
        """A ``BlobServiceClient`` on the account."""
        from azure.storage.blob import BlobServiceClient

        kwargs = self._merged(options)
        if self.mode == "identity":
            return BlobServiceClient(self._url("blob"), credential=self.credential, **kwargs)
        return BlobServiceClient.from_connection_string(self._connection_string, **kwargs)

    def container(self, name: str, **options: Any) -> ContainerClient:
        """A ``ContainerClient`` of container ``name``."""
        from azure.storage.blob import ContainerClient

        kwargs = self._merged(options)
        if self.mode == "identity":
            return ContainerClient(self._url("blob"), name, credential=self.credential, **kwargs)
        return ContainerClient.from_connection_string(self._connection_string, name, **kwargs)

    def queue_service(self, **options: Any) -> QueueServiceClient:
        """A ``QueueServiceClient`` on the account."""
        from azure.storage.queue import QueueServiceClient

        kwargs = self._merged(options)
        if self.mode == "identity":
            return QueueServiceClient(self._url("queue"), credential=self.credential, **kwargs)
        return QueueServiceClient.from_connection_string(self._connection_string, **kwargs)

    def queue(self, name: str, **options: Any) -> QueueClient:
        """A ``QueueClient`` of queue ``name``."""
        from azure.storage.queue import QueueClient

        kwargs = self._merged(options)
        if self.mode == "identity":
            return QueueClient(self._url("queue"), name, credential=self.credential, **kwargs)
        return QueueClient.from_connection_string(self._connection_string, name, **kwargs)

    def table_service(self, **options: Any) -> TableServiceClient:
        """A ``TableServiceClient`` on the account."""
        from azure.data.tables import TableServiceClient

        kwargs = self._merged(options)
        if self.mode == "identity":
            return TableServiceClient(
                endpoint=self._url("table"), credential=self.credential, **kwargs
            )
        return TableServiceClient.from_connection_string(self._connection_string, **kwargs)

    def table(self, name: str, **options: Any) -> TableClient:
        """A ``TableClient`` of table ``name``."""
        from azure.data.tables import TableClient

        kwargs = self._merged(options)
        if self.mode == "identity":
            return TableClient(
                endpoint=self._url("table"), table_name=name, credential=self.credential, **kwargs
            )
        return TableClient.from_connection_string(self._connection_string, name, **kwargs)


BATCH_NAMES: Final[Mapping[str, str]] = {
    "connection_string": "SCOREFN_BATCH_STORAGE or AzureWebJobsStorage",
    "blob": "SCOREFN_BATCH_BLOBS_URL",
    "queue": "SCOREFN_BATCH_QUEUES_URL",
    "table": "SCOREFN_BATCH_TABLES_URL",
    "client_id": "SCOREFN_BATCH_CLIENT_ID",
}
"""App setting names of ``BatchSettings`` storage, for messages."""
COLLECT_NAMES: Final[Mapping[str, str]] = {
    "connection_string": "SCOREFN_TELEMETRY_COLLECT_STORAGE or AzureWebJobsStorage",
    "blob": "SCOREFN_TELEMETRY_COLLECT_BLOBS_URL",
    "client_id": "SCOREFN_TELEMETRY_COLLECT_CLIENT_ID",
}
"""App setting names of data-collection storage, for messages."""
