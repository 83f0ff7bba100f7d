"""The local Functions host against real Azurite, real uvicorn and real HTTP.

Each tiny app under ``tests/integration/apps`` is served by a real ``LocalHost`` (in a
thread, or as a ``python -m shared.localhost`` child process) and driven over HTTP with
httpx or through Azurite with the storage SDKs.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobClient as SyncBlobClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from shared.localhost.auth import HostKeys
from shared.localhost.azurite import AzuriteProcess, StorageEndpoints
from shared.localhost.azurite import azurite as azurite_context
from shared.localhost.host import LocalHost
from shared.localhost.hostjson import HostConfig
from shared.localhost.ncrontab import parse_schedule
from shared.localhost.ports import free_ports
from shared.localhost.runner import HostProcess, HostThread
from tests.integration.apps import blob_app, http_app, plain_queue_app, queue_app, timer_app

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

HOST_JSON: dict[str, Any] = {
    "version": "2.0",
    "extensions": {
        "http": {"routePrefix": "api"},
        "queues": {
            "batchSize": 4,
            "newBatchThreshold": 2,
            "maxDequeueCount": 3,
            "visibilityTimeout": "00:00:00",
            "maxPollingInterval": "00:00:00.200",
            "messageEncoding": "base64",
        },
    },
}


def host_config(encoding: str = "base64") -> HostConfig:
    document = json.loads(json.dumps(HOST_JSON))
    document["extensions"]["queues"]["messageEncoding"] = encoding
    return HostConfig.from_dict(document)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def http_host() -> Iterator[HostThread]:
    host = LocalHost(
        http_app.app,
        config=host_config(),
        keys=HostKeys.of(["function-key"], "master-key"),
        max_body_bytes=1024,
    )
    with HostThread(host) as running:
        yield running


@pytest.fixture
def client(http_host: HostThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=http_host.base_url, timeout=10) as http:
        yield http


def test_route_params_query_headers_and_optional_segment(
    client: httpx.Client, http_host: HostThread
) -> None:
    response = client.get(
        "/api/v2/models/iris/versions/3",
        params=[("x", "1"), ("x", "2")],
        headers={"x-test": "t"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "method": "GET",
        "url": f"{http_host.base_url}/api/v2/models/iris/versions/3?x=1&x=2",
        "route_params": {"model": "iris", "version": "3"},
        "params": {"x": "1,2"},
        "body": "",
        "x_test": "t",
        "thread": False,
    }
    response = client.post("/api/v2/models/iris/versions", content=b"payload")
    assert response.status_code == 200
    assert response.json()["route_params"] == {"model": "iris"}
    assert response.json()["body"] == "payload"
    assert response.json()["method"] == "POST"


def test_int_constraint_and_catch_all(client: httpx.Client) -> None:
    response = client.get("/api/items/12/a/b.txt")
    assert response.status_code == 200
    assert response.json() == {"route_params": {"id": "12", "rest": "a/b.txt"}}
    response = client.get("/api/items/twelve/a")
    assert response.status_code == 404
    assert response.json() == {"error": "no function matches GET /api/items/twelve/a"}


def test_route_prefix_trailing_slash_and_case(client: httpx.Client) -> None:
    response = client.get("/api/HELLO/", params={"name": "ada"})
    assert response.status_code == 200
    assert response.text == "hello ada"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    response = client.get("/hello")
    assert response.status_code == 404
    assert response.json() == {"error": "no function matches GET /hello"}


def test_wrong_method_is_404_as_in_functions(client: httpx.Client) -> None:
    response = client.post("/api/hello")
    assert response.status_code == 404
    assert response.json() == {"error": "no function matches POST /api/hello"}


def test_async_handler_response_status_headers_body(client: httpx.Client) -> None:
    response = client.post("/api/async/echo", content=b"\x00\x01binary")
    assert response.status_code == 201
    assert response.content == b"\x00\x01binary"
    assert response.headers["x-echo"] == "yes"
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-length"] == "8"


def test_str_return_is_text_plain(client: httpx.Client) -> None:
    response = client.get("/api/text")
    assert response.status_code == 200
    assert response.text == "plain text"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_raising_handlers_give_500_and_the_host_keeps_serving(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    response = client.get("/api/boom")
    assert response.status_code == 500
    assert response.json() == {"error": "function boom raised ValueError: kaboom"}
    response = client.get("/api/async/boom")
    assert response.status_code == 500
    assert response.json() == {"error": "function async_boom raised LookupError: async kaboom"}
    assert client.get("/api/hello").text == "hello world"
    failures = [r for r in caplog.records if "Executed 'Functions.boom' (Failed" in r.message]
    assert len(failures) == 1
    assert failures[0].exc_info is not None


def test_body_over_limit_by_content_length_is_413(client: httpx.Client) -> None:
    response = client.post("/api/async/echo", content=b"x" * 2000)
    assert response.status_code == 413
    assert response.json() == {"error": "request body is 2000 bytes; the limit is 1024 bytes"}
    assert client.post("/api/async/echo", content=b"x" * 1024).status_code == 201


def test_streamed_body_over_limit_is_413(http_host: HostThread) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b"y" * 600

    with httpx.Client(base_url=http_host.base_url, timeout=10) as http:
        response = http.post("/api/async/echo", content=chunks())
    assert response.status_code == 413
    error = response.json()["error"]
    found = re.fullmatch(r"request body is (\d+) bytes; the limit is 1024 bytes", error)
    assert found is not None, error
    assert 1024 < int(found.group(1)) <= 2400


def test_auth_levels_with_keys(client: httpx.Client) -> None:
    response = client.get("/api/secured")
    assert response.status_code == 401
    assert response.json() == {
        "error": "function secured requires a function key in the x-functions-key header "
        "or the code query parameter"
    }
    wrong = client.get("/api/secured", headers={"x-functions-key": "nope"})
    assert wrong.status_code == 401
    assert client.get("/api/secured", headers={"x-functions-key": "function-key"}).text == (
        "function level"
    )
    assert client.get("/api/secured", params={"code": "function-key"}).status_code == 200
    assert client.get("/api/secured", params={"code": "master-key"}).status_code == 200
    response = client.get("/api/admin-only", headers={"x-functions-key": "function-key"})
    assert response.status_code == 401
    assert response.json() == {
        "error": "function admin_only requires the master key in the x-functions-key header "
        "or the code query parameter"
    }
    response = client.get("/api/admin-only", headers={"x-functions-key": "master-key"})
    assert (response.status_code, response.text) == (200, "admin level")
    assert client.get("/api/hello").status_code == 200


def test_auth_levels_are_open_without_keys() -> None:
    with (
        HostThread(LocalHost(http_app.app, config=host_config())) as running,
        httpx.Client(base_url=running.base_url) as http,
    ):
        assert http.get("/api/secured").text == "function level"
        assert http.get("/api/admin-only").text == "admin level"


def test_context_parameter(client: httpx.Client) -> None:
    trace_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = client.get("/api/context", headers={"traceparent": trace_parent})
    assert response.status_code == 200
    assert response.json() == {
        "function_name": "with_context",
        "invocation_id_length": 36,
        "trace_parent": trace_parent,
    }


def test_status_endpoint(client: httpx.Client) -> None:
    response = client.get("/admin/host/status")
    assert response.status_code == 200
    document = response.json()
    assert document["state"] == "Running"
    assert document["id"] == "localhost"
    assert "hello" in document["functions"]


def test_cli_subprocess_serves_logs_functions_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps(HOST_JSON))
    (port,) = free_ports(1)
    log = tmp_path / "host.log"
    process = HostProcess(
        "tests.integration.apps.http_app:app",
        port=port,
        cwd=REPO,
        host_json=host_json,
        max_body_bytes=10,
        keys=["cli-key"],
        log_path=log,
    )
    with process:
        response = httpx.get(f"{process.base_url}/api/hello")
        assert (response.status_code, response.text) == (200, "hello world")
        response = httpx.post(f"{process.base_url}/api/async/echo", content=b"x" * 11)
        assert response.status_code == 413
        assert response.json() == {"error": "request body is 11 bytes; the limit is 10 bytes"}
        assert httpx.get(f"{process.base_url}/api/secured").status_code == 401
        response = httpx.get(f"{process.base_url}/api/secured", params={"code": "cli-key"})
        assert (response.status_code, response.text) == (200, "function level")
        assert "cli-key" not in " ".join(process.command())
        assert process.stop() == 0
    text = log.read_text()
    assert f"hello: [GET] http://127.0.0.1:{port}/api/hello (authLevel anonymous)" in text
    assert (
        f"model_version: [GET,POST] http://127.0.0.1:{port}/api/v2/models/{{model}}/"
        "versions/{version?} (authLevel anonymous)"
    ) in text


# --------------------------------------------------------------------------- queues


@pytest.fixture(scope="module")
def queue_host(azurite: AzuriteProcess) -> Iterator[HostThread]:
    host = LocalHost(
        queue_app.app,
        config=host_config(),
        app_settings={"AzureWebJobsStorage": azurite.connection_string},
    )
    with HostThread(host) as running:
        yield running


def jobs_queue(azurite: AzuriteProcess, name: str = "jobs") -> QueueClient:
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    if name.endswith("-poison"):
        return client
    wait_until(lambda: _exists(client), f"queue {name} created by the host")
    return client


def _exists(client: QueueClient) -> bool:
    try:
        client.get_queue_properties()
    except Exception:  # not there yet
        return False
    return True


def seen(body: str) -> list[dict[str, object]]:
    return [record for record in queue_app.SEEN if record["body"] == body]


def poison_texts(azurite: AzuriteProcess, name: str) -> list[str]:
    client = QueueClient.from_connection_string(azurite.connection_string, name)
    if not _exists(client):
        return []
    return [str(message.content) for message in client.peek_messages(max_messages=32)]


def test_queue_trigger_processes_base64_messages(
    azurite: AzuriteProcess, queue_host: HostThread
) -> None:
    jobs = jobs_queue(azurite)
    sent = jobs.send_message(b64("hello-queue"))
    wait_until(lambda: bool(seen("hello-queue")), "the message to be processed")
    assert seen("hello-queue") == [{"id": sent.id, "body": "hello-queue", "dequeue_count": 1}]
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    result = blobs.get_blob_client("job-results", f"{sent.id}.json")
    wait_until(result.exists, "the output blob")
    assert json.loads(result.download_blob().readall()) == {
        "body": "hello-queue",
        "dequeue_count": 1,
    }
    wait_until(lambda: not jobs.peek_messages(max_messages=32), "the message to be deleted")


def test_http_queue_output_binding_feeds_the_queue_trigger(
    azurite: AzuriteProcess, queue_host: HostThread
) -> None:
    response = httpx.post(f"{queue_host.base_url}/api/enqueue", content=b"from-http")
    assert (response.status_code, response.content) == (202, b"")
    wait_until(lambda: bool(seen("from-http")), "the enqueued message to be processed")


def test_failing_message_is_retried_then_moved_to_poison(
    azurite: AzuriteProcess, queue_host: HostThread
) -> None:
    jobs = jobs_queue(azurite)
    jobs.send_message(b64("fail-this"))
    wait_until(
        lambda: b64("fail-this") in poison_texts(azurite, "jobs-poison"), "the poison message"
    )
    assert [record["dequeue_count"] for record in seen("fail-this")] == [1, 2, 3]
    assert all(m.content != b64("fail-this") for m in jobs.peek_messages(max_messages=32))


def test_message_that_is_not_base64_goes_to_poison_without_a_call(
    azurite: AzuriteProcess, queue_host: HostThread
) -> None:
    jobs = jobs_queue(azurite)
    jobs.send_message("not base64 at all!")
    wait_until(
        lambda: "not base64 at all!" in poison_texts(azurite, "jobs-poison"),
        "the undecodable message in the poison queue",
    )
    assert not [r for r in queue_app.SEEN if "base64" in str(r["body"])]


def test_message_encoding_none(azurite: AzuriteProcess) -> None:
    host = LocalHost(
        plain_queue_app.app,
        config=host_config("none"),
        app_settings={"AzureWebJobsStorage": azurite.connection_string},
    )
    with HostThread(host):
        jobs = jobs_queue(azurite, "plain-jobs")
        jobs.send_message("raw text, not base64")
        wait_until(lambda: b"raw text, not base64" in plain_queue_app.BODIES, "the message")


# --------------------------------------------------------------------------- blobs


def blob_host(azurite: AzuriteProcess) -> HostThread:
    host = LocalHost(
        blob_app.app,
        config=host_config(),
        app_settings={"AzureWebJobsStorage": azurite.connection_string},
        host_id="blob-tests",
        blob_poll_interval=0.1,
    )
    return HostThread(host)


def calls(name: str) -> list[tuple[str | None, int | None, bytes]]:
    return [record for record in blob_app.SEEN if record[0] == f"batch-input/{name}"]


def test_sdk_type_blob_client_parameter_gets_a_client_of_the_blob(
    azurite: AzuriteProcess,
) -> None:
    """As the Python worker does for ``azurefunctions-extensions-bindings-blob`` types: the
    function gets a ``BlobClient`` of the blob that fired, built from the connection
    setting, and reads (or not) what it wants itself."""
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    inputs = service.get_container_client("sdk-input")
    if not inputs.exists():
        inputs.create_container()
    inputs.upload_blob("dir/x.csv", b"a,b\n1,2\n", overwrite=True)
    with blob_host(azurite):
        wait_until(lambda: bool(blob_app.CLIENTS), "the SDK-type trigger")
    (client,) = blob_app.CLIENTS
    assert type(client) is SyncBlobClient
    assert (client.container_name, client.blob_name) == ("sdk-input", "dir/x.csv")
    assert client.download_blob(offset=4, length=3).readall() == b"1,2"


def test_blob_trigger_fires_once_per_blob_version_and_not_after_restart(
    azurite: AzuriteProcess,
) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    inputs = service.get_container_client("batch-input")
    if not inputs.exists():
        inputs.create_container()
    inputs.upload_blob("a.txt", b"alpha", overwrite=True)
    inputs.upload_blob("dir/b.txt", b"beta", overwrite=True)
    outputs = service.get_container_client("batch-output")

    with blob_host(azurite):
        wait_until(lambda: bool(calls("a.txt") and calls("dir/b.txt")), "both blobs")
        assert calls("a.txt") == [("batch-input/a.txt", 5, b"alpha")]
        assert calls("dir/b.txt") == [("batch-input/dir/b.txt", 4, b"beta")]
        wait_until(
            lambda: all(outputs.get_blob_client(n).exists() for n in ("a.txt", "dir/b.txt")),
            "the outputs",
        )
        assert outputs.download_blob("a.txt").readall() == b"ALPHA"
        assert outputs.download_blob("dir/b.txt").readall() == b"BETA"
        time.sleep(0.5)  # several more scans
        assert len(calls("a.txt")) == len(calls("dir/b.txt")) == 1

    with blob_host(azurite):
        time.sleep(0.6)  # the restarted host scans several times
        assert len(calls("a.txt")) == len(calls("dir/b.txt")) == 1
        inputs.upload_blob("c.txt", b"gamma")
        inputs.upload_blob("a.txt", b"alpha, changed", overwrite=True)
        wait_until(lambda: bool(calls("c.txt")) and len(calls("a.txt")) == 2, "new versions")
        assert calls("a.txt")[1] == ("batch-input/a.txt", 14, b"alpha, changed")
        time.sleep(0.3)
        assert len(calls("c.txt")) == 1

    receipts = service.get_container_client("azure-webjobs-hosts").list_blobs(
        name_starts_with="blobreceipts/blob-tests/Host.Functions.on_blob/"
    )
    assert sorted(name.name.split("/", 4)[4] for name in receipts) == [
        "batch-input/a.txt",
        "batch-input/a.txt",
        "batch-input/c.txt",
        "batch-input/dir/b.txt",
    ]


def test_failing_blob_is_retried_then_recorded_as_poison(azurite: AzuriteProcess) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    inputs = service.get_container_client("batch-input")
    if not inputs.exists():
        inputs.create_container()
    uploaded = inputs.upload_blob("bad.txt", b"fail me", overwrite=True)
    etag = uploaded.get_blob_properties().etag

    def poison() -> list[dict[str, Any]]:
        texts = poison_texts(azurite, "webjobs-blobtrigger-poison")
        return [json.loads(base64.b64decode(text)) for text in texts]

    with blob_host(azurite):
        wait_until(lambda: bool(poison()), "the blob poison message")
        assert poison() == [
            {
                "Type": "BlobTrigger",
                "FunctionId": "Host.Functions.on_blob",
                "BlobType": "BlockBlob",
                "ContainerName": "batch-input",
                "BlobName": "bad.txt",
                "ETag": etag,
            }
        ]
        time.sleep(0.4)
        assert len(calls("bad.txt")) == 3
    with blob_host(azurite):
        time.sleep(0.4)
        assert len(calls("bad.txt")) == 3
    assert not service.get_blob_client("batch-output", "bad.txt").exists()


# --------------------------------------------------------------------------- timers


def test_timer_trigger_runs_on_startup_and_on_schedule() -> None:
    with HostThread(LocalHost(timer_app.app, config=host_config())):
        wait_until(lambda: len(timer_app.TICKS) >= 3, "three ticks", timeout=5)
    first = timer_app.TICKS[0]
    assert first.past_due is False
    assert set(first.schedule_status) == {"Last", "Next", "LastUpdated"}
    assert first.schedule == {"AdjustForDST": True}


def test_ncrontab_schedules() -> None:
    moment = datetime(2026, 1, 30, 23, 59, 58, tzinfo=UTC)
    assert parse_schedule("0 */5 * * * *").next_after(moment) == datetime(
        2026, 1, 31, 0, 0, 0, tzinfo=UTC
    )
    # 09:30 on weekdays: Friday 30 January is past 09:30, so Monday 2 February.
    assert parse_schedule("0 30 9 * * Mon-Fri").next_after(moment) == datetime(
        2026, 2, 2, 9, 30, 0, tzinfo=UTC
    )
    assert parse_schedule("00:00:10").next_after(moment) == datetime(
        2026, 1, 31, 0, 0, 8, tzinfo=UTC
    )
    with pytest.raises(ValueError, match=r"has 5 fields; NCRONTAB needs 6"):
        parse_schedule("*/5 * * * *")
    with pytest.raises(ValueError, match=r"hour field: 24 is outside 0\.\.23"):
        parse_schedule("0 0 24 * * *")


# --------------------------------------------------------------------------- config, Azurite


def test_host_json_errors_name_the_field() -> None:
    with pytest.raises(ValueError) as caught:
        HostConfig.from_dict({"extensions": {"queues": {"batchSize": 64}}})
    assert str(caught.value) == (
        "host.json: extensions.queues.batchSize is 64; expected an integer in 1..32"
    )
    with pytest.raises(ValueError) as caught:
        HostConfig.from_dict({"extensions": {"queues": {"visibilityTimeout": "30s"}}})
    assert str(caught.value) == (
        "host.json: extensions.queues.visibilityTimeout: '30s' is not a TimeSpan; "
        "expected [d.]hh:mm:ss[.fffffff]"
    )
    config = HostConfig.load(REPO / "host.json")
    assert config.http.route_prefix == "api"
    assert config.queues.visibility_timeout == 30.0
    assert config.queues.max_polling_interval == 0.25
    assert config.function_timeout == 600.0


def test_missing_connection_setting_fails_at_start_up() -> None:
    with pytest.raises(ValueError) as caught:
        LocalHost(plain_queue_app.app, config=host_config())
    assert str(caught.value) == (
        "function plain: app setting 'AzureWebJobsStorage' (or "
        "'AzureWebJobsAzureWebJobsStorage') holds no connection string; set it in the "
        "environment or pass --storage for AzureWebJobsStorage"
    )


def test_azurite_reuse_by_connection_string(azurite: AzuriteProcess) -> None:
    with azurite_context(connection_string=azurite.connection_string) as endpoints:
        assert endpoints == azurite.endpoints
        assert endpoints.connection_string == azurite.connection_string
    (port,) = free_ports(1)
    dead = StorageEndpoints("127.0.0.1", port, port, port)
    with pytest.raises(ConnectionError), azurite_context(connection_string=dead.connection_string):
        pass
