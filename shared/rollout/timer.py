"""The controller of the gate timer: built once per process, its lease released on exit."""

from __future__ import annotations

import atexit

from shared.rollout.controller import RolloutController
from shared.rollout.lease import ControllerLease
from shared.routing.router import STORAGE_NAMES, Router
from shared.settings import RouterSettings
from shared.storage_clients import StorageClients

__all__ = ["rollout_controller"]


_built: dict[int, RolloutController] = {}


def _controller(settings: RouterSettings, router: Router) -> RolloutController:
    blobs = StorageClients(
        connection_string=settings.storage,
        blobs_url=settings.blobs_url,
        needs=("blob",),
        names=STORAGE_NAMES,
    ).blob_service()
    lease = ControllerLease.on(blobs, duration_s=settings.rollout_lease_s)
    atexit.register(lease.release)
    strategies = router.strategies
    assert strategies is not None
    return RolloutController(
        strategies.tables, router.configs.store, lease, instance=strategies.instance
    )


def rollout_controller(settings: RouterSettings, router: Router) -> RolloutController:
    """The process's controller (acting under the blob lease), built on first use."""
    controller = _built.get(id(router))
    if controller is None:
        controller = _built[id(router)] = _controller(settings, router)
    return controller
