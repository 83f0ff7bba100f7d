"""The scoring app's process-wide state: its settings and its one data plane.

Both scoring blueprints (online and batch) serve the same models from the same sessions,
so they share this instead of one blueprint reaching into the other. Built on first use
(at blueprint import): settings read once, the CUDA requirement checked, models loading
in the background.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from shared.serving.dataplane import DataPlane, check_cuda
from shared.settings import ScoringSettings

__all__ = ["ScoringRuntime", "scoring_runtime"]


@dataclass(frozen=True)
class ScoringRuntime:
    """What every scoring entry point of this process uses."""

    settings: ScoringSettings
    plane: DataPlane


@functools.cache
def scoring_runtime() -> ScoringRuntime:
    """The process's runtime; ``RuntimeError`` if CUDA is required and unusable."""
    settings = ScoringSettings()
    check_cuda(settings.require_cuda)
    plane: DataPlane
    if settings.model_store:
        from shared.modelstore.runtime import store_plane

        plane = store_plane(settings)
    else:
        plane = DataPlane(settings.models_dir, settings.models, batching=settings.batching)
    plane.start_loading()
    return ScoringRuntime(settings, plane)
