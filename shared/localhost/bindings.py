"""Storage input and output bindings: ``queue`` out, ``blob`` out and ``blob`` in.

A handler parameter bound to an output gets an ``OutValue`` (an ``azure.functions.Out``);
after the function succeeds, whatever it ``set()`` is written. A ``$return`` output binding
writes the return value. Paths and queue names are binding templates (``expressions``).
Queue message text follows host.json ``messageEncoding`` (``encode_message`` /
``decode_message``), as the Functions queue extension does.
"""

from __future__ import annotations

import base64
import binascii
import typing
from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import azure.functions as func
from azure.core.exceptions import ResourceNotFoundError
from azure.functions.blob import InputStream
from azure.storage.blob import BlobProperties

from shared.localhost.expressions import BindingData, BindingTemplate, split_blob_path
from shared.localhost.storage import StorageAccounts, ensure_container, ensure_queue

__all__ = [
    "BlobInput",
    "BlobOutput",
    "InputBinding",
    "OutValue",
    "OutputBinding",
    "QueueOutput",
    "blob_argument",
    "blob_properties",
    "decode_message",
    "encode_message",
]

T = TypeVar("T")


class OutValue(func.Out[T], Generic[T]):
    """The value a function sets on an output binding (``None`` until ``set``)."""

    def __init__(self) -> None:
        self._value: T | None = None
        self.is_set = False

    def set(self, val: T) -> None:
        """Set the value written after the function returns."""
        self._value = val
        self.is_set = True

    def get(self) -> T:
        """The value set so far (``None`` if nothing was set)."""
        return self._value  # type: ignore[return-value]


class OutputBinding(Protocol):
    """Writes an output value once the function has succeeded."""

    async def write(self, value: Any, data: BindingData) -> None:
        """Write ``value``; ``data`` fills the binding's templates."""


class InputBinding(Protocol):
    """Reads an input value before the function runs."""

    async def read(self, data: BindingData) -> Any:
        """The argument for the function; ``data`` fills the binding's templates."""


def encode_message(body: bytes, encoding: str) -> str:
    """Queue message text for ``body`` under host.json ``messageEncoding``."""
    if encoding == "base64":
        return base64.b64encode(body).decode("ascii")
    return body.decode("utf-8")


def decode_message(text: str, encoding: str) -> bytes:
    """Message body of queue message ``text``; ``ValueError`` when it is not valid base64."""
    if encoding == "base64":
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise ValueError(
                "message text is not base64, but host.json extensions.queues.messageEncoding "
                "is 'base64'"
            ) from exc
    return text.encode("utf-8")


def _message_bodies(value: Any) -> list[bytes]:
    items = value if isinstance(value, list | tuple) else [value]
    bodies: list[bytes] = []
    for item in items:
        if isinstance(item, str):
            bodies.append(item.encode("utf-8"))
        elif isinstance(item, bytes | bytearray):
            bodies.append(bytes(item))
        elif isinstance(item, func.QueueMessage):
            bodies.append(item.get_body())
        else:
            raise TypeError(
                f"a queue output takes str, bytes, QueueMessage or a list of them; "
                f"got {type(item).__name__}"
            )
    return bodies


class QueueOutput:
    """A ``queue`` output binding: sends each value as a message, creating the queue."""

    def __init__(
        self,
        storage: StorageAccounts,
        *,
        connection: str | None,
        queue_name: str,
        encoding: str,
        on_sent: Callable[[str, str | None], None] | None = None,
    ) -> None:
        """``on_sent(queue_name, connection)`` is told after each send (to wake listeners)."""
        self._storage = storage
        self._connection = connection
        self._queue_name = BindingTemplate.parse(queue_name)
        self._encoding = encoding
        self._on_sent = on_sent

    async def write(self, value: Any, data: BindingData) -> None:
        """Send the message(s) in ``value``."""
        if value is None:
            return
        bodies = _message_bodies(value)
        queue_name = self._queue_name.resolve(data).lower()
        client = self._storage.queue(self._connection, queue_name)
        for body in bodies:
            text = encode_message(body, self._encoding)
            try:
                await client.send_message(text)
            except ResourceNotFoundError:
                await ensure_queue(client)
                await client.send_message(text)
        if self._on_sent is not None and bodies:
            self._on_sent(queue_name, self._connection)


def _blob_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    read = getattr(value, "read", None)
    if callable(read):
        return _blob_bytes(read())
    raise TypeError(f"a blob output takes str, bytes or a readable; got {type(value).__name__}")


class BlobOutput:
    """A ``blob`` output binding: uploads the value (overwriting), creating the container."""

    def __init__(self, storage: StorageAccounts, *, connection: str | None, path: str) -> None:
        self._storage = storage
        self._connection = connection
        self._path = BindingTemplate.parse(path)

    async def write(self, value: Any, data: BindingData) -> None:
        """Upload ``value`` (str, bytes or anything with ``read()``)."""
        if value is None:
            return
        body = _blob_bytes(value)
        container_name, blob_name = split_blob_path(self._path.resolve(data))
        container = self._storage.container(self._connection, container_name)
        try:
            await container.upload_blob(blob_name, body, overwrite=True)
        except ResourceNotFoundError:
            await ensure_container(container)
            await container.upload_blob(blob_name, body, overwrite=True)


def blob_properties(properties: BlobProperties) -> dict[str, Any]:
    """Blob properties in the shape the Functions worker passes them."""
    modified = properties.last_modified
    settings = properties.content_settings
    return {
        "Length": properties.size,
        "ContentLength": properties.size,
        "ContentType": settings.content_type if settings else None,
        "ETag": properties.etag,
        "LastModified": modified.isoformat() if isinstance(modified, datetime) else None,
        "BlobType": str(properties.blob_type),
    }


def blob_argument(
    annotation: Any, *, data: bytes, name: str, uri: str, properties: BlobProperties
) -> Any:
    """The argument for a blob parameter: ``bytes``, ``str`` or (by default) an
    ``azure.functions.blob.InputStream`` named ``container/blob``."""
    if annotation is bytes:
        return data
    if annotation is str:
        return data.decode("utf-8")
    return InputStream(
        data=data,
        name=name,
        uri=uri,
        length=len(data),
        blob_properties=blob_properties(properties),
        metadata=dict(properties.metadata or {}),
    )


class BlobInput:
    """A ``blob`` input binding: the blob at the resolved path, or ``None`` if missing."""

    def __init__(
        self, storage: StorageAccounts, *, connection: str | None, path: str, annotation: Any
    ) -> None:
        self._storage = storage
        self._connection = connection
        self._path = BindingTemplate.parse(path)
        self._annotation = _unwrap_optional(annotation)

    async def read(self, data: BindingData) -> Any:
        """Download the blob named by the binding's path."""
        container_name, blob_name = split_blob_path(self._path.resolve(data))
        blob = self._storage.container(self._connection, container_name).get_blob_client(blob_name)
        try:
            download = await blob.download_blob()
        except ResourceNotFoundError:
            return None
        content = await download.readall()
        return blob_argument(
            self._annotation,
            data=content,
            name=f"{container_name}/{blob_name}",
            uri=blob.url,
            properties=download.properties,
        )


def _unwrap_optional(annotation: Any) -> Any:
    arguments = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, type(bytes | None)) and len(arguments) == 1:
        return arguments[0]
    return annotation
