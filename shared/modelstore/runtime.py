"""Build the on-demand data plane from a scoring app's settings."""

from __future__ import annotations

from shared.errors import PackageError
from shared.modelstore.blobstore import ModelStoreClient
from shared.modelstore.plane import StoreDataPlane, StoreOptions
from shared.modelstore.policy import parse_model_rules
from shared.settings import ScoringSettings

__all__ = ["store_plane"]


def store_plane(settings: ScoringSettings) -> StoreDataPlane:
    """The plane ``settings.model_store`` describes (nothing is listed until
    ``start_loading``). ``PackageError`` for bad model rules."""
    try:
        rules = parse_model_rules(settings.model_store_models)
    except ValueError as exc:
        raise PackageError("SCOREFN_MODEL_STORE_MODELS", "", str(exc)) from exc
    client = ModelStoreClient.from_setting(
        settings.model_store,
        settings.model_store_container,
        client_id=settings.model_store_client_id,
    )
    options = StoreOptions(
        cache_dir=settings.model_cache_dir,
        max_loaded_models=settings.max_loaded_models,
        max_memory_mb=settings.max_memory_mb,
        refresh_s=settings.model_store_refresh_s,
        load_wait_s=settings.request_timeout_s,
    )
    return StoreDataPlane(client, rules, options, batching=settings.batching)
