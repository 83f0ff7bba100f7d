"""Blob triggers: scan a container and invoke the function once per new or changed blob.

Locally there is no Event Grid, so both ``source="EventGrid"`` and ``LogsAndContainerScan``
poll the container of the binding's ``path`` every ``poll_interval`` seconds. As in the
Functions blob extension, each processed blob version (name + ETag) gets a *receipt* blob in
the ``azure-webjobs-hosts`` container, ``blobreceipts/<hostId>/Host.Functions.<name>/
<etag>/<container>/<blob>``; a restarted host reads them back and does not fire again for a
blob it already processed, while a blob overwritten since (new ETag) fires again.

An ``InputStream`` parameter gets a ``BlobStream``: name, URL, length and properties at
once, the content only as the function reads it (ranged reads of the version that fired),
so a huge blob is never held in memory by the host. ``bytes`` / ``str`` parameters get the
whole content, as in Azure. A parameter typed as an SDK-type ``BlobClient``
(``azurefunctions-extensions-bindings-blob``) gets a ``BlobClient`` of the blob, as the
Python worker builds one in Azure.

A failing invocation is retried on later scans, up to host.json ``maxDequeueCount``
attempts in all; then the blob is recorded as poison: an error is logged, a message naming
it is sent to the ``webjobs-blobtrigger-poison`` queue and a receipt with status ``poison``
stops further attempts. At most ``blobs.maxDegreeOfParallelism`` invocations run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobClient as SyncBlobClient
from azure.storage.blob import BlobServiceClient as SyncBlobServiceClient
from azure.storage.blob.aio import BlobClient, ContainerClient

from shared.localhost.bindings import blob_argument, blob_properties, encode_message
from shared.localhost.blobstream import BlobStream
from shared.localhost.expressions import BlobPathPattern
from shared.localhost.invocation import Invoker
from shared.localhost.storage import StorageAccounts, ensure_container, ensure_queue

__all__ = ["HOSTS_CONTAINER", "POISON_QUEUE", "BlobListener", "BlobReceipts"]

logger = logging.getLogger("shared.localhost.blobs")

HOSTS_CONTAINER = "azure-webjobs-hosts"
"""Container holding blob receipts."""
POISON_QUEUE = "webjobs-blobtrigger-poison"
"""Queue told about blobs whose function failed ``maxDequeueCount`` times."""

BlobVersion = tuple[str, str]
"""A blob name and an ETag (without quotes)."""


def _etag(value: str | None) -> str:
    return (value or "").strip('"')


class BlobReceipts:
    """Receipts of the blob versions one function has processed, kept in storage."""

    def __init__(self, hosts: ContainerClient, *, host_id: str, function_name: str) -> None:
        self._hosts = hosts
        self._prefix = f"blobreceipts/{host_id}/Host.Functions.{function_name}/"

    def _name(self, container: str, version: BlobVersion) -> str:
        name, etag = version
        return f"{self._prefix}{etag}/{container}/{name}"

    async def load(self, container: str) -> set[BlobVersion]:
        """The blob versions of ``container`` that have a receipt."""
        await ensure_container(self._hosts)
        versions: set[BlobVersion] = set()
        async for item in self._hosts.list_blobs(name_starts_with=self._prefix):
            etag, _, rest = item.name[len(self._prefix) :].partition("/")
            receipt_container, _, name = rest.partition("/")
            if receipt_container == container and name:
                versions.add((name, etag))
        return versions

    async def record(
        self, container: str, version: BlobVersion, *, status: str, invocation_id: str
    ) -> None:
        """Write the receipt of ``version`` (status ``completed`` or ``poison``)."""
        await self._hosts.upload_blob(
            self._name(container, version),
            b"",
            overwrite=True,
            metadata={"status": status, "invocationid": invocation_id},
        )


class BlobListener:
    """Feeds one container's new and changed blobs to one function."""

    def __init__(
        self,
        invoker: Invoker,
        *,
        storage: StorageAccounts,
        connection: str | None,
        path: str,
        host_id: str,
        max_dequeue_count: int,
        parallelism: int,
        poll_interval: float,
        message_encoding: str,
        annotation: Any = None,
        source: str = "LogsAndContainerScan",
        shutdown_timeout: float = 10.0,
    ) -> None:
        """``annotation`` of the trigger parameter picks the argument type: bytes or str
        (the content, downloaded before the call) or, by default, an InputStream that
        reads the blob lazily (``BlobStream``); ``message_encoding`` applies to the
        poison-queue message."""
        self.invoker = invoker
        self.pattern = BlobPathPattern(path)
        self.connection = connection
        self._storage = storage
        self._host_id = host_id
        self._max_attempts = max_dequeue_count
        self._parallelism = asyncio.Semaphore(parallelism)
        self._poll_interval = poll_interval
        self._encoding = message_encoding
        self._annotation = annotation
        self._source = source
        self._shutdown_timeout = shutdown_timeout
        self._stop = asyncio.Event()
        self._done: set[BlobVersion] = set()
        self._attempts: dict[BlobVersion, int] = {}
        self._running: dict[BlobVersion, asyncio.Task[None]] = {}
        self._sync_service: SyncBlobServiceClient | None = None
        """Reads of ``BlobStream`` arguments (functions run in threads, not on the loop)."""

    def stop(self) -> None:
        """Ask ``run`` to stop scanning and return once running invocations finish."""
        self._stop.set()

    async def run(self) -> None:
        """Scan until ``stop()``; then wait up to ``shutdown_timeout`` for invocations."""
        container = self._storage.container(self.connection, self.pattern.container)
        receipts = BlobReceipts(
            self._storage.container(self.connection, HOSTS_CONTAINER),
            host_id=self._host_id,
            function_name=self.invoker.function.name,
        )
        ready = False
        while not self._stop.is_set():
            try:
                if not ready:
                    await ensure_container(container)
                    self._done = await receipts.load(self.pattern.container)
                    ready = True
                await self._scan(container, receipts)
            except AzureError as exc:
                logger.warning("Scanning container '%s' failed: %s", self.pattern.container, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._poll_interval)
        if self._running:
            _, pending = await asyncio.wait(
                set(self._running.values()), timeout=self._shutdown_timeout or None
            )
            for task in pending:
                task.cancel()  # no receipt was written: the blob is processed again later
        if self._sync_service is not None:
            self._sync_service.close()

    async def _scan(self, container: ContainerClient, receipts: BlobReceipts) -> None:
        prefix = self.pattern.prefix or None
        async for item in container.list_blobs(name_starts_with=prefix):
            version = (item.name, _etag(item.etag))
            if version in self._done or version in self._running:
                continue
            values = self.pattern.match(item.name)
            if values is None:
                continue
            task = asyncio.create_task(self._process(container, receipts, version, values))
            self._running[version] = task
            task.add_done_callback(functools.partial(self._finished, version))

    def _finished(self, version: BlobVersion, task: asyncio.Task[None]) -> None:
        self._running.pop(version, None)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "Processing blob '%s/%s' failed",
                self.pattern.container,
                version[0],
                exc_info=task.exception(),
            )

    async def _process(
        self,
        container: ContainerClient,
        receipts: BlobReceipts,
        version: BlobVersion,
        values: dict[str, str],
    ) -> None:
        name, etag = version
        async with self._parallelism:
            blob = container.get_blob_client(name)
            path = f"{container.container_name}/{name}"
            try:
                argument = await self._argument(blob, etag, path)
            except (ResourceNotFoundError, ResourceModifiedError):
                return  # deleted or changed since listed: the next scan sees what is there
            data: dict[str, Any] = dict(values)
            data.update(blobtrigger=path, uri=blob.url)
            attempt = self._attempts.get(version, 0) + 1
            outcome = await self.invoker.invoke(
                argument,
                data,
                reason=f"New blob detected({self._source}): {path}",
                retry_count=attempt - 1,
                max_retry_count=self._max_attempts - 1,
            )
            if outcome.ok:
                self._attempts.pop(version, None)
                await receipts.record(
                    container.container_name,
                    version,
                    status="completed",
                    invocation_id=outcome.invocation_id,
                )
                self._done.add(version)
                return
            self._attempts[version] = attempt
            if attempt < self._max_attempts:
                return
            logger.error(
                "Blob '%s' (ETag %s) failed %d times (maxDequeueCount %d); recorded as poison "
                "and reported to queue '%s'",
                path,
                etag,
                attempt,
                self._max_attempts,
                POISON_QUEUE,
            )
            await self._report_poison(container.container_name, version)
            await receipts.record(
                container.container_name,
                version,
                status="poison",
                invocation_id=outcome.invocation_id,
            )
            self._attempts.pop(version, None)
            self._done.add(version)

    async def _argument(self, blob: BlobClient, etag: str, path: str) -> Any:
        """``bytes`` / ``str`` parameters get the content; an ``InputStream`` (the default)
        a ``BlobStream`` that reads nothing until the function reads it."""
        quoted, unchanged = f'"{etag}"', MatchConditions.IfNotModified
        if self._annotation in (bytes, str):
            download = await blob.download_blob(etag=quoted, match_condition=unchanged)
            content = await download.readall()
            return blob_argument(
                self._annotation,
                data=content,
                name=path,
                uri=blob.url,
                properties=download.properties,
            )
        if self._sync_service is None:
            self._sync_service = SyncBlobServiceClient.from_connection_string(
                self._storage.connection_string(self.connection)
            )
        if isinstance(self._annotation, type) and issubclass(self._annotation, SyncBlobClient):
            # an SDK-type binding (azurefunctions-extensions-bindings-blob): in Azure the
            # worker builds a plain BlobClient for the blob from the connection setting and
            # reads nothing itself
            return self._sync_service.get_blob_client(blob.container_name, blob.blob_name)
        properties = await blob.get_blob_properties(etag=quoted, match_condition=unchanged)
        return BlobStream(
            self._sync_service.get_blob_client(blob.container_name, blob.blob_name),
            etag=quoted,
            name=path,
            uri=blob.url,
            length=int(properties.size),
            blob_properties=blob_properties(properties),
            metadata=dict(properties.metadata or {}),
        )

    async def _report_poison(self, container: str, version: BlobVersion) -> None:
        name, etag = version
        message = {
            "Type": "BlobTrigger",
            "FunctionId": f"Host.Functions.{self.invoker.function.name}",
            "BlobType": "BlockBlob",
            "ContainerName": container,
            "BlobName": name,
            "ETag": f'"{etag}"',
        }
        queue = self._storage.queue(self.connection, POISON_QUEUE)
        text = encode_message(json.dumps(message).encode("utf-8"), self._encoding)
        try:
            await queue.send_message(text)
        except ResourceNotFoundError:
            await ensure_queue(queue)
            await queue.send_message(text)
