"""Queue triggers: poll a storage queue and invoke the function once per message.

host.json ``extensions.queues`` as the Functions queue extension reads it:

- ``batchSize`` messages are fetched per poll and run concurrently; the next batch is
  fetched once ``newBatchThreshold`` or fewer are still running;
- an empty poll doubles the wait before the next one, from 100 ms up to
  ``maxPollingInterval``; a message sent by this host's own queue output binding wakes the
  listener at once;
- a message is leased (invisible) for ``functionTimeout`` while its function runs; on
  success it is deleted; on failure it is made visible again after ``visibilityTimeout``, so
  its dequeue count grows with every attempt;
- after ``maxDequeueCount`` failed attempts it is copied, text unchanged, to
  ``<queue>-poison`` and deleted. A message whose text is not valid base64 under
  ``messageEncoding: base64`` goes to the poison queue without an attempt (it can never
  succeed), with the reason logged.

The queue is created when missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from azure.core.exceptions import AzureError
from azure.functions.queue import QueueMessage as FunctionQueueMessage
from azure.storage.queue import QueueMessage
from azure.storage.queue.aio import QueueClient

from shared.localhost.bindings import decode_message
from shared.localhost.hostjson import QueueOptions
from shared.localhost.invocation import Invoker
from shared.localhost.storage import StorageAccounts, ensure_queue

__all__ = ["POISON_SUFFIX", "QueueListener"]

logger = logging.getLogger("shared.localhost.queues")

POISON_SUFFIX = "-poison"
"""Appended to a queue's name to name its poison queue."""

_MIN_POLL = 0.1
_MAX_LEASE = 7 * 24 * 3600


class QueueListener:
    """Feeds one queue's messages to one function."""

    def __init__(
        self,
        invoker: Invoker,
        *,
        storage: StorageAccounts,
        connection: str | None,
        queue_name: str,
        options: QueueOptions,
        lease_seconds: float,
        shutdown_timeout: float = 10.0,
    ) -> None:
        """``lease_seconds``: how long a received message stays invisible while its function
        runs (the host passes ``functionTimeout``)."""
        self.invoker = invoker
        self.queue_name = queue_name
        self.connection = connection
        self._storage = storage
        self._options = options
        self._lease = max(1, min(_MAX_LEASE, int(lease_seconds)))
        self._shutdown_timeout = shutdown_timeout
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._running: set[asyncio.Task[None]] = set()
        self._reason = f"New queue message detected on '{queue_name}'."

    def wake(self) -> None:
        """Poll now instead of waiting out the back-off (a message was just sent)."""
        self._wakeup.set()

    def stop(self) -> None:
        """Ask ``run`` to stop fetching and return once running invocations finish."""
        self._stopping = True
        self._wakeup.set()

    async def run(self) -> None:
        """Poll until ``stop()``; then wait up to ``shutdown_timeout`` for invocations."""
        client = self._storage.queue(self.connection, self.queue_name)
        delay = _MIN_POLL
        created = False
        while not self._stopping:
            if len(self._running) > self._options.fetch_threshold:
                await self._sleep(None)
                continue
            try:
                if not created:
                    await ensure_queue(client)
                    created = True
                messages = [
                    message
                    async for message in client.receive_messages(
                        messages_per_page=self._options.batch_size,
                        max_messages=self._options.batch_size,
                        visibility_timeout=self._lease,
                    )
                ]
            except AzureError as exc:
                logger.warning("Polling queue '%s' failed: %s", self.queue_name, exc)
                messages = []
            if messages:
                delay = _MIN_POLL
                for message in messages:
                    task = asyncio.create_task(self._process(client, message))
                    self._running.add(task)
                    task.add_done_callback(self._finished)
                continue
            await self._sleep(delay)
            delay = min(delay * 2, self._options.max_polling_interval)
        await _drain(self._running, self._shutdown_timeout, f"queue '{self.queue_name}'")

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wakeup.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "Processing a message of queue '%s' failed",
                self.queue_name,
                exc_info=task.exception(),
            )

    async def _sleep(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        self._wakeup.clear()

    async def _process(self, client: QueueClient, message: QueueMessage) -> None:
        limit = self._options.max_dequeue_count
        dequeue_count = message.dequeue_count or 1
        if dequeue_count > limit:
            await self._poison(
                client,
                message,
                f"its dequeue count {dequeue_count} is over maxDequeueCount {limit}",
            )
            return
        text = str(message.content or "")
        try:
            body = decode_message(text, self._options.message_encoding)
        except ValueError as exc:
            await self._poison(client, message, str(exc))
            return
        trigger = FunctionQueueMessage(  # type: ignore[no-untyped-call]
            id=message.id,
            body=body,
            dequeue_count=dequeue_count,
            expiration_time=message.expires_on,
            insertion_time=message.inserted_on,
            time_next_visible=message.next_visible_on,
            pop_receipt=message.pop_receipt,
        )
        data = _binding_data(message, body) if self.invoker.uses_binding_data else {}
        outcome = await self.invoker.invoke(
            trigger,
            data,
            reason=self._reason,
            retry_count=dequeue_count - 1,
            max_retry_count=limit - 1,
        )
        try:
            if outcome.ok:
                await client.delete_message(message.id, message.pop_receipt)
            elif dequeue_count >= limit:
                await self._poison(
                    client, message, f"it failed {dequeue_count} times (maxDequeueCount {limit})"
                )
            else:
                await client.update_message(
                    message.id,
                    message.pop_receipt,
                    visibility_timeout=int(self._options.visibility_timeout),
                )
        except AzureError as exc:
            logger.warning(
                "Could not settle message %s of queue '%s' (it reappears when its lease ends): %s",
                message.id,
                self.queue_name,
                exc,
            )

    async def _poison(self, client: QueueClient, message: QueueMessage, why: str) -> None:
        poison_name = self.queue_name + POISON_SUFFIX
        logger.error(
            "Message %s of queue '%s' moved to queue '%s': %s",
            message.id,
            self.queue_name,
            poison_name,
            why,
        )
        poison = self._storage.queue(self.connection, poison_name)
        await ensure_queue(poison)
        await poison.send_message(str(message.content or ""))
        await client.delete_message(message.id, message.pop_receipt)


async def _drain(tasks: set[asyncio.Task[None]], timeout: float, what: str) -> None:
    if not tasks:
        return
    _, pending = await asyncio.wait(set(tasks), timeout=timeout or None)
    if pending:
        logger.warning(
            "Stopping %s: %d invocation(s) still running after %s s are abandoned; their "
            "messages reappear when their lease ends",
            what,
            len(pending),
            timeout,
        )
        for task in pending:
            task.cancel()


def _binding_data(message: QueueMessage, body: bytes) -> dict[str, Any]:
    text = body.decode("utf-8", errors="replace")
    data: dict[str, Any] = {}
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict):
        data.update((str(key).lower(), value) for key, value in document.items())
    data.update(
        queuetrigger=text,
        id=message.id,
        dequeuecount=message.dequeue_count,
        insertiontime=message.inserted_on,
        expirationtime=message.expires_on,
        nextvisibletime=message.next_visible_on,
        popreceipt=message.pop_receipt,
    )
    return data
