"""``StorageClients``: connection string or account URLs + identity, and the refusals of a
configuration that cannot work (each message names the setting)."""

from __future__ import annotations

from typing import Any, TypedDict

import pytest
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential
from pydantic import ValidationError

from shared.modelstore.blobstore import ModelStoreClient
from shared.settings import BatchSettings, ScoringSettings, TelemetrySettings
from shared.storage_clients import StorageClients, check_storage, credential_for


class _Urls(TypedDict):
    blobs_url: str
    queues_url: str
    tables_url: str


ACCOUNT = "scorefnacct"
URLS: _Urls = {
    "blobs_url": f"https://{ACCOUNT}.blob.core.windows.net/",
    "queues_url": f"https://{ACCOUNT}.queue.core.windows.net/",
    "tables_url": f"https://{ACCOUNT}.table.core.windows.net/",
}
CLIENT_ID = "11111111-2222-4333-8444-555555555555"


@pytest.fixture(autouse=True)
def _no_ambient_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AzureWebJobsStorage", "SCOREFN_BATCH_STORAGE", "SCOREFN_BATCH_BLOBS_URL",
                 "SCOREFN_BATCH_QUEUES_URL", "SCOREFN_BATCH_TABLES_URL",
                 "SCOREFN_BATCH_CLIENT_ID", "SCOREFN_TELEMETRY_COLLECT_STORAGE",
                 "SCOREFN_TELEMETRY_COLLECT_BLOBS_URL", "SCOREFN_TELEMETRY_COLLECT_CLIENT_ID",
                 "SCOREFN_MODEL_STORE", "SCOREFN_MODEL_STORE_CLIENT_ID"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- modes


def test_connection_string_mode_builds_keyed_clients() -> None:
    clients = StorageClients(connection_string="UseDevelopmentStorage=true")
    assert clients.mode == "connection_string"
    assert clients.credential is None
    assert clients.url("blob") is None
    assert clients.blob_service().url == "http://127.0.0.1:10000/devstoreaccount1/"
    assert clients.queue("chunks").url == "http://127.0.0.1:10001/devstoreaccount1/chunks"
    assert clients.table("jobs").url.startswith("http://127.0.0.1:10002/devstoreaccount1")
    assert clients.container("models").credential.account_name == "devstoreaccount1"


def test_identity_mode_with_a_client_id_uses_that_managed_identity() -> None:
    clients = StorageClients(**URLS, client_id=CLIENT_ID)
    assert clients.mode == "identity"
    credential = clients.credential
    assert isinstance(credential, ManagedIdentityCredential)
    blobs = clients.blob_service()
    assert blobs.url == URLS["blobs_url"]
    assert blobs.credential is credential  # one credential per client id per process
    queue = clients.queue("chunks-blue")
    assert queue.url == f"https://{ACCOUNT}.queue.core.windows.net/chunks-blue"
    assert queue.credential is credential
    table = clients.table("jobs")
    assert table.url.startswith(f"https://{ACCOUNT}.table.core.windows.net")
    assert clients.queue_service().credential is credential
    assert clients.table_service().url.startswith(URLS["tables_url"].rstrip("/"))
    assert clients.container("models").url == URLS["blobs_url"] + "models"
    assert credential_for(CLIENT_ID) is credential


def test_identity_mode_without_a_client_id_uses_default_azure_credential() -> None:
    clients = StorageClients(**URLS)
    assert isinstance(clients.credential, DefaultAzureCredential)


def test_urls_win_over_the_default_connection_string() -> None:
    settings = BatchSettings(**URLS, client_id=CLIENT_ID)
    assert settings.storage == "UseDevelopmentStorage=true"  # the default stays...
    clients = StorageClients.for_batch(settings)
    assert clients.mode == "identity"  # ...but is not used
    assert clients.blob_service().url == URLS["blobs_url"]


def test_client_options_reach_every_client() -> None:
    clients = StorageClients(
        connection_string="UseDevelopmentStorage=true", options={"connection_timeout": 3}
    )
    container = clients.container("c", read_timeout=7)
    transport: Any = container._pipeline._transport  # the SDK's own attribute
    assert (transport.connection_config.timeout, transport.connection_config.read_timeout) == (
        3,
        7,
    )


# --------------------------------------------------------------------------- refusals


def test_neither_connection_string_nor_urls_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError) as caught:
        StorageClients(connection_string="  ")
    assert str(caught.value) == (
        "storage is not configured: give connection string (a connection string; "
        "UseDevelopmentStorage=true for Azurite) or blob service URL, queue service URL, "
        "table service URL (reached with an identity)"
    )
    monkeypatch.setenv("SCOREFN_BATCH_STORAGE", "")
    with pytest.raises(ValidationError) as settings_error:
        BatchSettings()
    assert settings_error.value.errors()[0]["msg"] == (
        "Value error, storage is not configured: give SCOREFN_BATCH_STORAGE or "
        "AzureWebJobsStorage (a connection string; UseDevelopmentStorage=true for Azurite) "
        "or SCOREFN_BATCH_BLOBS_URL, SCOREFN_BATCH_QUEUES_URL, SCOREFN_BATCH_TABLES_URL "
        "(reached with an identity)"
    )


def test_some_urls_but_not_all_the_role_needs_are_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        BatchSettings(blobs_url=URLS["blobs_url"], tables_url=URLS["tables_url"])
    assert caught.value.errors()[0]["msg"] == (
        "Value error, SCOREFN_BATCH_BLOBS_URL, SCOREFN_BATCH_TABLES_URL set, so storage is "
        "reached with an identity; also set SCOREFN_BATCH_QUEUES_URL"
    )


def test_a_url_that_is_not_https_is_refused() -> None:
    with pytest.raises(ValueError) as caught:
        StorageClients(
            blobs_url="http://127.0.0.1:10000/devstoreaccount1", needs=("blob",)
        )
    assert str(caught.value) == (
        "blob service URL 'http://127.0.0.1:10000/devstoreaccount1' is not an https:// URL; "
        "a storage account is reached with an identity only over TLS (locally, give the "
        "connection string instead)"
    )


def test_a_url_with_a_sas_token_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as caught:
        StorageClients(blobs_url=URLS["blobs_url"] + "?sv=2024&sig=SECRET", needs=("blob",))
    message = str(caught.value)
    assert "SECRET" not in message
    assert message == (
        "blob service URL must be the bare service URL, without '?...' (no SAS token in a "
        f"setting); got {URLS['blobs_url']}?..."
    )


def test_the_endpoint_of_another_service_is_refused() -> None:
    with pytest.raises(ValueError) as caught:
        StorageClients(
            blobs_url=URLS["blobs_url"], queues_url=URLS["blobs_url"], tables_url=URLS["tables_url"]
        )
    assert str(caught.value) == (
        f"queue service URL {URLS['blobs_url']!r} is the blob endpoint of account "
        f"{ACCOUNT!r}; expected its queue endpoint https://{ACCOUNT}.queue.core.windows.net"
    )


def test_a_client_id_without_urls_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        BatchSettings(client_id=CLIENT_ID)
    assert caught.value.errors()[0]["msg"] == (
        "Value error, SCOREFN_BATCH_CLIENT_ID is set but no service URL is "
        "(SCOREFN_BATCH_BLOBS_URL, SCOREFN_BATCH_QUEUES_URL, SCOREFN_BATCH_TABLES_URL): an "
        "identity is only used with the URLs (a connection string needs none)"
    )


def test_a_service_the_role_was_not_configured_for_is_refused() -> None:
    clients = StorageClients(blobs_url=URLS["blobs_url"], needs=("blob",))
    with pytest.raises(ValueError) as caught:
        clients.queue("chunks")
    assert str(caught.value) == (
        "no queue service URL is set; this role was configured for blob only"
    )


def test_check_storage_names_the_mode() -> None:
    assert check_storage(connection_string="x", urls={}, client_id=None) == "connection_string"
    assert (
        check_storage(
            connection_string="",
            urls={"blob": URLS["blobs_url"]},
            client_id=None,
            needs=("blob",),
        )
        == "identity"
    )


# --------------------------------------------------------------------------- settings


def test_batch_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCOREFN_BATCH_BLOBS_URL", URLS["blobs_url"])
    monkeypatch.setenv("SCOREFN_BATCH_QUEUES_URL", "http://x.queue.core.windows.net")
    monkeypatch.setenv("SCOREFN_BATCH_TABLES_URL", URLS["tables_url"])
    with pytest.raises(ValidationError) as caught:
        BatchSettings()
    assert caught.value.errors()[0]["msg"].startswith(
        "Value error, SCOREFN_BATCH_QUEUES_URL 'http://x.queue.core.windows.net' is not an "
        "https:// URL"
    )


def test_collector_settings_take_a_blob_url(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = TelemetrySettings(collect_blobs_url=URLS["blobs_url"], collect_client_id=CLIENT_ID)
    clients = StorageClients.for_collector(settings)
    assert clients.mode == "identity"
    assert clients.container("data-collection").url == URLS["blobs_url"] + "data-collection"
    with pytest.raises(ValidationError) as caught:
        TelemetrySettings(collect_client_id=CLIENT_ID)
    assert "SCOREFN_TELEMETRY_COLLECT_CLIENT_ID is set but no service URL is" in str(caught.value)


def test_model_store_setting_is_a_url_or_a_connection_string() -> None:
    store = ModelStoreClient.from_setting(URLS["blobs_url"], "models", client_id=CLIENT_ID)
    assert store.container.url == URLS["blobs_url"] + "models"
    assert isinstance(store.container.credential, ManagedIdentityCredential)
    local = ModelStoreClient.from_setting("UseDevelopmentStorage=true", "models")
    assert local.container.url == "http://127.0.0.1:10000/devstoreaccount1/models"
    with pytest.raises(ValueError, match=r"^SCOREFN_MODEL_STORE 'http://example\.org' is not an"):
        ModelStoreClient.from_setting("http://example.org", "models")
    with pytest.raises(ValidationError) as caught:
        ScoringSettings(model_store="UseDevelopmentStorage=true", model_store_client_id=CLIENT_ID)
    assert "SCOREFN_MODEL_STORE_CLIENT_ID is set but no service URL is" in str(caught.value)


def test_an_empty_client_id_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bicep sets SCOREFN_MODEL_STORE_CLIENT_ID to '' when no model store is configured."""
    monkeypatch.setenv("SCOREFN_MODEL_STORE_CLIENT_ID", "")
    assert ScoringSettings().model_store_client_id == ""
    monkeypatch.setenv("SCOREFN_MODEL_STORE", URLS["blobs_url"])
    store_settings = ScoringSettings()
    store = ModelStoreClient.from_setting(
        store_settings.model_store, client_id=store_settings.model_store_client_id
    )
    assert isinstance(store.container.credential, DefaultAzureCredential)
