"""Batch storage by identity, as in Azure: account URLs + a managed-identity token, no key.

Azurite takes OAuth bearer tokens only over https and with ``--oauth basic``, so this
module starts its own Azurite with a self-signed certificate for 127.0.0.1 (trusted
through ``REQUESTS_CA_BUNDLE``). Tokens come from azure-identity's real
``ManagedIdentityCredential``, which asks the App Service managed-identity endpoint
(``IDENTITY_ENDPOINT`` / ``IDENTITY_HEADER``, as in a function app). That endpoint is the
one fake here: a small HTTP server standing in for Entra's token service, which cannot be
reached from tests; it mints tokens shaped like Entra's storage tokens (``iss``
``https://sts.windows.net/<tenant>/``, ``aud`` the requested resource), which is what
Azurite checks (``basic`` does not verify signatures). Everything else is the production
path: ``BatchSettings`` read from the environment, ``StorageClients`` in identity mode,
the router's ``BatchJobs`` submitting a job and a scoring ``BatchService`` planning,
scoring and committing it.
"""

from __future__ import annotations

import datetime
import io
import ipaddress
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient
from azure.storage.queue import TextBase64DecodePolicy
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.localhost.azurite import DEV_ACCOUNT_NAME, AzuriteProcess, find_azurite_binary
from shared.localhost.ports import free_ports
from tests.integration.stack_helpers import batch_names

pytestmark = pytest.mark.integration

TENANT = "72f988bf-0000-4000-8000-000000000001"
STORAGE = "https://storage.azure.com"
SIGNING_KEY = "azurite-basic-oauth-checks-no-signature"
COLUMNS = [
    "amount", "hour", "merchant_risk", "distance_km",
    "foreign", "txn_24h", "avg_amount_30d", "card_present",
]  # fmt: skip
NAMES = {**batch_names("idn"), "SCOREFN_BATCH_CHUNK_BYTES": "65536"}


# --------------------------------------------------------------------------- TLS Azurite


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _OAuthAzurite(AzuriteProcess):
    """Azurite over https, accepting OAuth bearer tokens (``--oauth basic``)."""

    def __init__(self, location: Path, binary: Path, cert: Path, key: Path) -> None:
        super().__init__(location, binary=binary)
        self.cert = cert
        """The certificate clients must trust."""
        self._tls = ["--oauth", "basic", "--cert", str(cert), "--key", str(key)]

    def command(self) -> list[str]:
        return [*super().command(), *self._tls]

    def url(self, service: str) -> str:
        ends = self.endpoints
        port = {"blob": ends.blob_port, "queue": ends.queue_port, "table": ends.table_port}
        return f"https://{ends.host}:{port[service]}/{DEV_ACCOUNT_NAME}"


# --------------------------------------------------------------------------- token service


class _TokenService:
    """The managed-identity endpoint of an App Service / Functions host (api-version
    2019-08-01), minting Entra-shaped tokens; records what it was asked."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.asked: list[dict[str, str]] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                if self.headers.get("X-IDENTITY-HEADER") != service.secret:
                    self._send(401, {"error": "X-IDENTITY-HEADER is missing or wrong"})
                    return
                service.asked.append(query)
                now = int(time.time())
                claims = {
                    "aud": query["resource"],
                    "iss": f"https://sts.windows.net/{TENANT}/",
                    "iat": now,
                    "nbf": now - 60,
                    "exp": now + 3600,
                    "appid": query.get("client_id", ""),
                    "oid": str(uuid.uuid4()),
                    "tid": TENANT,
                }
                token = jwt.encode(claims, SIGNING_KEY, algorithm="HS256")
                self._send(
                    200,
                    {
                        "access_token": token,
                        "expires_on": str(now + 3600),
                        "resource": query["resource"],
                        "token_type": "Bearer",
                        "client_id": query.get("client_id", ""),
                    },
                )

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        (port,) = free_ports(1)
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{port}/msi/token"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _StaticToken:
    """A ``TokenCredential`` handing out one fixed token (the refused-issuer check)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tls_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_OAuthAzurite]:
    binary = find_azurite_binary()
    if binary is None:
        pytest.skip("node_modules/.bin/azurite is missing; run `npm install` first")
    folder = tmp_path_factory.mktemp("azurite-tls")
    cert, key = _self_signed(folder)
    process = _OAuthAzurite(folder / "data", binary, cert, key)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def identity(
    tls_azurite: _OAuthAzurite, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[_TokenService, str]]:
    """The managed-identity endpoint, and a fresh client id (so ``credential_for`` builds
    a new ``ManagedIdentityCredential`` that sees this environment)."""
    tokens = _TokenService(secret=uuid.uuid4().hex)
    client_id = str(uuid.uuid4())
    monkeypatch.setenv("IDENTITY_ENDPOINT", tokens.url)
    monkeypatch.setenv("IDENTITY_HEADER", tokens.secret)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_azurite.cert))
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.delenv("SCOREFN_BATCH_STORAGE", raising=False)
    try:
        yield tokens, client_id
    finally:
        tokens.close()


def _fraud_csv(n: int) -> bytes:
    rng = np.random.default_rng(11)
    columns = {c: rng.random(n).astype(np.float32) for c in COLUMNS}
    table = pa.table({"txn_id": [f"t{i:05d}" for i in range(n)], **columns})
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------- tests


def test_batch_job_through_account_urls_and_managed_identity(
    tls_azurite: _OAuthAzurite,
    identity: tuple[_TokenService, str],
    example_models: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.batch.jobs import BatchJobs, JobRequest
    from shared.batch.service import BatchService
    from shared.serving.dataplane import DataPlane
    from shared.settings import BatchSettings
    from shared.storage_clients import StorageClients

    tokens, client_id = identity
    env = {
        **NAMES,
        "SCOREFN_BATCH_BLOBS_URL": tls_azurite.url("blob"),
        "SCOREFN_BATCH_QUEUES_URL": tls_azurite.url("queue"),
        "SCOREFN_BATCH_TABLES_URL": tls_azurite.url("table"),
        "SCOREFN_BATCH_CLIENT_ID": client_id,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = BatchSettings()
    clients = StorageClients.for_batch(settings)
    assert clients.mode == "identity"

    # the user's drop, written by identity too
    inputs = clients.container("idn-input")
    inputs.create_container()
    rows = 3000
    inputs.upload_blob("idn/day1.csv", _fraud_csv(rows))

    # the router's job API records the job and sends the plan message
    jobs = BatchJobs(settings)
    record, created = jobs.submit("idn", JobRequest(input="idn/day1.csv"), deployment="blue")
    assert created and record.state == "planning"

    # the scoring app plans, scores each chunk and commits
    plane = DataPlane(example_models, "fraud:1")
    plane.start_loading()
    service = BatchService(settings, plane, deployment="blue")
    plans = clients.queue("idn-plans-blue", message_decode_policy=TextBase64DecodePolicy())
    (plan,) = list(plans.receive_messages(max_messages=5))
    planned = service.plan_message(plan.content.encode())
    assert planned is not None and planned.state == "running" and planned.chunks > 1
    chunks = clients.queue("idn-chunks", message_decode_policy=TextBase64DecodePolicy())
    deadline = time.monotonic() + 60
    while jobs.get("idn", record.job).state == "running" and time.monotonic() < deadline:
        for message in chunks.receive_messages(max_messages=16):
            service.process(message.content.encode(), message.dequeue_count or 1)
            chunks.delete_message(message)

    view = jobs.view(jobs.get("idn", record.job))
    assert (view["state"], view["rows"]["total"], view["rows"]["predicted"]) == (
        "succeeded",
        rows,
        rows,
    )
    output = clients.container("idn-output")
    prefix = f"idn/{record.job}/"
    assert output.get_blob_client(prefix + "_SUCCESS").exists()
    data = output.download_blob(prefix + "predictions.csv").readall()
    predictions = pacsv.read_csv(pa.py_buffer(data))
    assert predictions["row"].to_pylist() == list(range(rows))
    assert predictions["txn_id"].to_pylist() == [f"t{i:05d}" for i in range(rows)]

    # every token came from the managed identity named by SCOREFN_BATCH_CLIENT_ID, for storage
    assert tokens.asked
    assert {(q["resource"], q.get("client_id")) for q in tokens.asked} == {(STORAGE, client_id)}


def test_azurite_refuses_a_token_of_another_issuer(tls_azurite: _OAuthAzurite) -> None:
    """The bearer token is really checked here (so the test above proves the identity path)."""
    now = int(time.time())
    claims = {"aud": STORAGE, "iss": "https://issuer.example/", "iat": now, "nbf": now - 60,
              "exp": now + 3600}  # fmt: skip
    token = jwt.encode(claims, SIGNING_KEY, algorithm="HS256")
    client = ContainerClient(
        tls_azurite.url("blob"),
        "idn-refused",
        credential=_StaticToken(token),
        connection_verify=str(tls_azurite.cert),
    )
    with pytest.raises(HttpResponseError) as caught:
        client.create_container()
    assert caught.value.status_code in (401, 403)
    assert "issuer" in str(caught.value).lower()


def test_model_store_through_its_blob_url(
    tls_azurite: _OAuthAzurite, identity: tuple[_TokenService, str], example_models: Path
) -> None:
    from shared.modelstore.blobstore import ModelStoreClient

    tokens, client_id = identity
    client = ModelStoreClient.from_setting(
        tls_azurite.url("blob") + "/", "idn-models", client_id=client_id
    )
    assert client.list_packages() == {}
    client.push(example_models / "fraud" / "1", "fraud", "1")
    assert list(client.list_packages()) == [("fraud", "1")]
    assert {q.get("client_id") for q in tokens.asked} == {client_id}
