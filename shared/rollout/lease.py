"""The one-actor lock of rollout controllers: a blob lease.

Every router instance runs the gate timer; only the holder of the lease on blob
``scorefn-locks/rollout-controller`` acts. The holder renews the lease on each run (and
before each change), releases it on exit; an instance whose renewal fails has lost it
and stops acting until it acquires it again. A killed holder's lease expires after
``duration_s`` (15..60 s), then another instance takes over.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError
from azure.storage.blob import BlobClient, BlobLeaseClient, BlobServiceClient, ContainerClient

__all__ = ["CONTAINER", "BLOB", "ControllerLease"]

log = logging.getLogger("shared.rollout")

CONTAINER: Final = "scorefn-locks"
BLOB: Final = "rollout-controller"
_MARGIN_S: Final = 3.0


class ControllerLease:
    """Acquires, renews and releases the controller lease for one instance."""

    def __init__(
        self,
        container: ContainerClient,
        *,
        duration_s: int = 15,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._container = container
        self._blob: BlobClient = container.get_blob_client(BLOB)
        self.duration_s = duration_s
        self._clock = clock
        self._lease: BlobLeaseClient | None = None
        self._renewed_at = float("-inf")
        self._ready = False

    @classmethod
    def on(cls, service: BlobServiceClient, *, duration_s: int = 15) -> ControllerLease:
        """The lease blob of ``service``'s account."""
        return cls(service.get_container_client(CONTAINER), duration_s=duration_s)

    @property
    def held(self) -> bool:
        """Whether this instance holds the lease (as of its last renewal)."""
        return (
            self._lease is not None
            and self._clock() - self._renewed_at < self.duration_s - _MARGIN_S
        )

    def _ensure_blob(self) -> None:
        if self._ready:
            return
        with contextlib.suppress(ResourceExistsError):
            self._container.create_container()
        try:
            self._blob.upload_blob(b"", overwrite=False)
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            if exc.status_code != 412:  # 412: leased by another instance, so it exists
                raise
        self._ready = True

    def hold(self) -> bool:
        """Renew or acquire the lease; whether this instance may act now."""
        if self._lease is not None:
            try:
                self._lease.renew()
                self._renewed_at = self._clock()
                return True
            except AzureError as exc:
                log.warning("rollout controller lease lost (%s); stopped acting", exc)
                self._lease = None
        try:
            self._ensure_blob()
            lease = BlobLeaseClient(self._blob)
            lease.acquire(lease_duration=self.duration_s)
        except HttpResponseError as exc:
            if exc.status_code == 409:  # another instance holds it
                return False
            log.warning("rollout controller lease unavailable: %s", exc)
            return False
        except AzureError as exc:
            log.warning("rollout controller lease unavailable: %s", exc)
            return False
        self._lease = lease
        self._renewed_at = self._clock()
        log.info("rollout controller lease acquired", extra={"lease_id": lease.id})
        return True

    def release(self) -> None:
        """Give the lease back (on exit)."""
        if self._lease is None:
            return
        try:
            self._lease.release()
        except AzureError as exc:
            log.warning("rollout controller lease release failed: %s", exc)
        self._lease = None
