"""Telemetry over the real local stack: a router host and two scoring hosts (fraud v1
and v2) on Azurite, each with the Prometheus and console exporters on (spans as JSON
lines in a file per process) and data collection on the primary deployment.

One endpoint, ``tele`` (auth mode none, blue 100 %, mirror green 100 %), and containers,
queues and tables of its own.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from azure.storage.blob import BlobServiceClient

from shared.localhost.azurite import AzuriteProcess
from shared.localhost.ports import free_ports
from shared.localhost.runner import HostProcess
from shared.routing.endpoint import EndpointSpec
from shared.routing.store import EndpointStore
from shared.telemetry.scrape import Sample, fetch, total

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENDPOINT = "tele"
COLUMNS = ["amount", "hour", "merchant_risk", "distance_km",
           "foreign", "txn_24h", "avg_amount_30d", "card_present"]  # fmt: skip
ROW = [5000, 3, 0.95, 400, 1, 25, 20, 0]
SCORE = {"input_data": {"columns": COLUMNS, "data": [ROW]}}
COLLECTED = "tl-collected"
BATCH = {
    "SCOREFN_BATCH_INPUT_CONTAINER": "tl-input",
    "SCOREFN_BATCH_OUTPUT_CONTAINER": "tl-output",
    "SCOREFN_BATCH_STAGING_CONTAINER": "tl-staging",
    "SCOREFN_BATCH_JOBS_TABLE": "tljobs",
    "SCOREFN_BATCH_QUEUE": "tl-chunks",
    "SCOREFN_BATCH_PLAN_QUEUE": "tl-plans-{deployment}",
}
REQUESTS = "scorefn_request_duration_seconds_count"


@dataclass
class Stack:
    router: str
    blue: str
    green: str
    storage: str
    spans: dict[str, Path]

    def read_spans(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for process, path in self.spans.items():
            if path.exists():
                for line in path.read_text().splitlines():
                    document = json.loads(line)
                    if "context" in document and "name" in document:
                        document["process"] = process
                        rows.append(document)
        return rows


def _host(name: str, port: int, env: dict[str, str], spans: Path, logs: Path) -> HostProcess:
    return HostProcess(
        "function_app:app",
        port=port,
        cwd=ROOT,
        storage=env["AzureWebJobsStorage"],
        host_id=f"tele-{name}",
        log_path=logs / f"{name}.log",
        env={
            **env,
            "SCOREFN_TELEMETRY_EXPORTER": "prometheus,console",
            "SCOREFN_TELEMETRY_CONSOLE_PATH": str(spans),
            "SCOREFN_TELEMETRY_EXPORT_INTERVAL_S": "3600",
        },
    )


@pytest.fixture(scope="module")
def stack(
    azurite: AzuriteProcess, example_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("telemetry")
    storage = azurite.connection_string
    router_port, blue_port, green_port = free_ports(3)
    spec = EndpointSpec.model_validate({
        "name": ENDPOINT,
        "auth": {"mode": "none"},
        "deployments": [
            {"name": "blue", "models": ["fraud:1"], "local_port": blue_port},
            {"name": "green", "models": ["fraud:2"], "local_port": green_port},
        ],
        "traffic": {"blue": 100, "green": 0},
        "mirror": {"green": 100},
    })  # fmt: skip
    store = EndpointStore.from_connection_string(storage)
    store.apply(spec)
    store.close()
    spans = {name: tmp / f"{name}.jsonl" for name in ("router", "blue", "green")}
    scoring = {
        "APP_ROLE": "scoring",
        "SCOREFN_MODELS_DIR": str(example_models),
        "AzureWebJobsStorage": storage,
        "SCOREFN_TELEMETRY_ENDPOINT": ENDPOINT,
        **BATCH,
    }
    hosts = [
        _host(
            "blue",
            blue_port,
            {
                **scoring,
                "SCOREFN_MODELS": "fraud:1",
                "SCOREFN_DEPLOYMENT": "blue",
                "SCOREFN_TELEMETRY_COLLECT_RATE": "1",
                "SCOREFN_TELEMETRY_COLLECT_CONTAINER": COLLECTED,
                "SCOREFN_TELEMETRY_COLLECT_FLUSH_S": "0.2",
            },
            spans["blue"],
            tmp,
        ),
        _host(
            "green",
            green_port,
            {
                **scoring,
                "SCOREFN_MODELS": "fraud:2",
                "SCOREFN_DEPLOYMENT": "green",
                # Green serves another model: its batch triggers watch names of their own.
                **{key: value.replace("tl-", "tg-").replace("tljobs", "tgjobs")
                   for key, value in BATCH.items()},
            },
            spans["green"],
            tmp,
        ),
        _host(
            "router",
            router_port,
            {
                "APP_ROLE": "router",
                "SCOREFN_ROUTER_STORAGE": storage,
                "SCOREFN_ROUTER_LOCAL_ISSUER": "http://127.0.0.1:9",  # local mode; unused
                "AzureWebJobsStorage": storage,
            },
            spans["router"],
            tmp,
        ),
    ]
    try:
        for host in hosts:
            host.start(timeout=90)
        for host in hosts[:2]:
            ready = f"{host.base_url}/api/v2/health/ready"
            _wait(lambda url=ready: httpx.get(url).status_code == 200)  # type: ignore[misc]
        yield Stack(hosts[2].base_url, hosts[0].base_url, hosts[1].base_url, storage, spans)
    finally:
        for host in hosts:
            host.stop()


def _wait(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError("condition not met in time")


def _score(stack: Stack, body: object, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{stack.router}/api/endpoints/{ENDPOINT}/score", json=body, headers=headers, timeout=30
    )


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


# ------------------------------------------------------------------ traces
def test_one_request_is_one_trace_from_router_to_scoring(stack: Stack) -> None:
    traceparent, trace_id, caller_span = _traceparent()
    response = _score(stack, SCORE, traceparent=traceparent, **{"x-request-id": "trace-1"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == ["highly_suspicious"]

    def spans() -> list[dict[str, Any]]:
        return [s for s in stack.read_spans() if s["context"]["trace_id"] == f"0x{trace_id}"]

    # The mirror copy's scoring span lands last (green, in the background).
    _wait(lambda: sum(s["name"] == "POST score" for s in spans()) == 2)
    found = spans()
    by_id = {s["context"]["span_id"]: s for s in found}

    def one(name: str, process: str) -> dict[str, Any]:
        matches = [s for s in found if s["name"] == name and s["process"] == process]
        assert len(matches) == 1, (name, process, [s["name"] for s in found])
        return matches[0]

    router = one("POST endpoints/{endpoint}/score", "router")
    assert router["parent_id"] == f"0x{caller_span}"  # the caller's traceparent
    assert router["kind"] == "SpanKind.SERVER"
    assert router["attributes"]["endpoint"] == ENDPOINT
    assert router["attributes"]["deployment"] == "blue"
    assert router["attributes"]["http.response.status_code"] == 200
    for name in ("scorefn.auth", "scorefn.route"):
        assert one(name, "router")["parent_id"] == router["context"]["span_id"]
    assert one("scorefn.route", "router")["attributes"]["deployment"] == "blue"
    forwards = [s for s in found if s["name"] == "scorefn.forward"]
    primary = next(s for s in forwards if s["attributes"]["deployment"] == "blue")
    assert primary["parent_id"] == router["context"]["span_id"]
    assert primary["kind"] == "SpanKind.CLIENT"

    scoring = one("POST score", "blue")  # across the HTTP hop: the forward span's child
    assert scoring["parent_id"] == primary["context"]["span_id"]
    assert scoring["attributes"]["model"] == "fraud:1"
    assert scoring["attributes"]["deployment"] == "blue"
    batcher = one("scorefn.batcher", "blue")
    assert batcher["parent_id"] == scoring["context"]["span_id"]
    assert batcher["attributes"] == {"model": "fraud", "version": "1", "rows": 1}

    mirror_forward = next(s for s in forwards if s["attributes"]["deployment"] == "green")
    assert mirror_forward["attributes"]["scorefn.mirror"] is True
    mirrored = one("POST score", "green")
    assert mirrored["parent_id"] == mirror_forward["context"]["span_id"]
    assert all(s["parent_id"] in by_id for s in found if s is not router)


# ------------------------------------------------------------------ metrics
def _scrapes(stack: Stack) -> dict[str, list[Sample]]:
    return {name: fetch(url) for name, url in
            (("router", stack.router), ("blue", stack.blue), ("green", stack.green))}  # fmt: skip


def test_metric_counts_match_the_requests_sent(stack: Stack) -> None:
    before = _scrapes(stack)
    sent_ok, sent_bad = 7, 2
    for i in range(sent_ok):
        assert _score(stack, SCORE, **{"x-request-id": f"count-{i}"}).status_code == 200
    for _ in range(sent_bad):
        bad = _score(stack, {"input_data": {"columns": COLUMNS, "data": [["x"] * 8]}})
        assert bad.status_code == 400, bad.text
    # Mirror copies finish in the background: wait for all of them to be counted.
    copies = "scorefn_mirror_copies_total"

    def mirrored() -> float:
        return total(fetch(stack.router), copies) - total(before["router"], copies)

    _wait(lambda: mirrored() == sent_ok + sent_bad)
    after = _scrapes(stack)

    def delta(process: str, name: str, **labels: str) -> float:
        return total(after[process], name, **labels) - total(before[process], name, **labels)

    ok = {"http_response_status_code": "200"}
    refused = {"http_response_status_code": "400"}
    router = {"role": "router", "endpoint": ENDPOINT, "deployment": "blue"}
    assert delta("router", REQUESTS, **router, **ok) == sent_ok
    assert delta("router", REQUESTS, **router, **refused) == sent_bad
    assert delta("router", REQUESTS, **router, model="fraud:1", **ok) == sent_ok
    scoring = {"role": "scoring", "endpoint": ENDPOINT, "deployment": "blue"}
    assert delta("blue", REQUESTS, **scoring, model="fraud:1", **ok) == sent_ok
    assert delta("blue", REQUESTS, **scoring, **refused) == sent_bad
    # Every copy reached green: its own request count says so too.
    assert delta("green", REQUESTS, deployment="green", **ok) == sent_ok
    assert delta("green", REQUESTS, deployment="green", **refused) == sent_bad
    # One row per good request went through blue's batcher (bad ones fail validation).
    assert delta("blue", "scorefn_batcher_batch_size_sum", model="fraud:1") == sent_ok
    assert 1 <= delta("blue", "scorefn_batcher_batch_size_count", model="fraud:1") <= sent_ok
    assert delta("blue", "scorefn_batcher_queue_wait_seconds_count", model="fraud:1") >= 1
    assert total(after["blue"], "scorefn_batcher_queue_depth", model="fraud:1") == 0
    # Mirror outcomes and latency deltas: one per answered copy.
    assert delta("router", "scorefn_mirror_latency_delta_seconds_count") == sent_ok + sent_bad
    assert delta("router", copies, outcome="failed") == 0
    # Model load and warm-up were measured once at start.
    assert total(after["blue"], "scorefn_model_load_duration_seconds_count", model="fraud") == 1
    assert total(after["blue"], "scorefn_model_warmup_duration_seconds_count", model="fraud") == 1
    # Histograms are populated: the duration sum is positive.
    assert delta("blue", "scorefn_request_duration_seconds_sum", deployment="blue") > 0


def test_metrics_endpoint_is_plain_prometheus_text(stack: Stack) -> None:
    response = httpx.get(f"{stack.router}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE scorefn_request_duration_seconds histogram" in response.text


# ------------------------------------------------------------------ data collection
def test_collected_records_land_in_hourly_partitions(stack: Stack) -> None:
    traceparent, trace_id, _ = _traceparent()
    ids = [f"collect-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    for request_id in ids:
        headers = {"x-request-id": request_id, "traceparent": traceparent}
        assert _score(stack, SCORE, **headers).status_code == 200
    container = BlobServiceClient.from_connection_string(stack.storage).get_container_client(
        COLLECTED
    )

    def records() -> list[tuple[str, dict[str, Any]]]:
        found = []
        for blob in container.list_blobs(name_starts_with=f"{ENDPOINT}/blue/"):
            data = container.download_blob(blob.name).readall().decode()
            found += [(blob.name, json.loads(line)) for line in data.splitlines()]
        return [(n, r) for n, r in found if r["request_id"] in ids]

    _wait(lambda: len(records()) == len(ids))
    for name, record in records():
        stamp = record["time"][:13]  # yyyy-mm-ddThh
        folder = f"{ENDPOINT}/blue/{stamp[:4]}/{stamp[5:7]}/{stamp[8:10]}/{stamp[11:13]}/"
        assert name.startswith(folder) and name.endswith(".jsonl")
        assert record["trace_id"] == trace_id
        assert (record["endpoint"], record["deployment"], record["model"]) == (
            ENDPOINT, "blue", "fraud:1",
        )  # fmt: skip
        assert record["request"] == SCORE
        assert record["response"]["predictions"] == ["highly_suspicious"]
    metrics = fetch(stack.blue)
    assert total(metrics, "scorefn_datacollection_records_total", outcome="written") >= len(ids)


# ------------------------------------------------------------------ batch
def test_batch_job_is_one_trace_across_plan_chunks_and_commit(stack: Stack) -> None:
    service = BlobServiceClient.from_connection_string(stack.storage)
    inputs = service.get_container_client(BATCH["SCOREFN_BATCH_INPUT_CONTAINER"])
    if not inputs.exists():
        inputs.create_container()
    rows = 40
    table = pa.table({c: [float(v) for v in [ROW[i]] * rows] for i, c in enumerate(COLUMNS)})
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    name = f"{ENDPOINT}/job-{uuid.uuid4().hex[:8]}.csv"
    before = fetch(stack.blue)
    inputs.upload_blob(name, buffer.getvalue())
    output = service.get_container_client(BATCH["SCOREFN_BATCH_OUTPUT_CONTAINER"])

    def committed() -> bool:
        if not output.exists():
            return False
        return any(b.name.endswith("/_SUCCESS") for b in output.list_blobs(f"{ENDPOINT}/"))

    _wait(committed, timeout=90)
    wanted = {"scorefn.batch.plan", "scorefn.batch.chunk", "scorefn.batch.commit"}

    def job_spans() -> list[dict[str, Any]]:
        spans = stack.read_spans()
        plans = [s for s in spans if s["name"] == "scorefn.batch.plan"]
        if not plans:
            return []
        trace = plans[-1]["context"]["trace_id"]
        return [s for s in spans if s["context"]["trace_id"] == trace]

    # _SUCCESS is written inside the commit span: the chunk and commit spans end after it.
    _wait(lambda: wanted <= {s["name"] for s in job_spans()})
    in_trace = job_spans()
    names = {s["name"] for s in in_trace}
    plans = [s for s in in_trace if s["name"] == "scorefn.batch.plan"]
    assert len(plans) == 1
    assert {"scorefn.blob.read", "scorefn.blob.write"} <= names
    plan_id = plans[-1]["context"]["span_id"]
    chunks = [s for s in in_trace if s["name"] == "scorefn.batch.chunk"]
    assert all(c["parent_id"] == plan_id for c in chunks)  # through the queue message
    commit = next(s for s in in_trace if s["name"] == "scorefn.batch.commit")
    assert commit["parent_id"] in {c["context"]["span_id"] for c in chunks}
    # fraud v1 is an ONNX graph then a Python postprocess hook: one span per step.
    chunk_ids = {c["context"]["span_id"] for c in chunks}
    steps = [s for s in in_trace if s["name"] in ("scorefn.infer", "scorefn.postprocess")]
    assert {s["name"] for s in steps} == {"scorefn.infer", "scorefn.postprocess"}
    assert all(s["parent_id"] in chunk_ids for s in steps)
    assert {s["attributes"]["model"] for s in steps} == {"fraud"}

    after = fetch(stack.blue)
    predicted = {"endpoint": ENDPOINT, "deployment": "blue", "outcome": "predicted"}
    name_rows = "scorefn_batch_rows_total"
    assert total(after, name_rows, **predicted) - total(before, name_rows, **predicted) == rows
    jobs = "scorefn_batch_job_duration_seconds_count"
    assert total(after, jobs, status="succeeded") - total(before, jobs, status="succeeded") == 1


# ------------------------------------------------------------------ scorefn stats
def test_stats_command_summarises_each_deployment(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.cli import main as scorefn

    for i in range(5):
        assert _score(stack, SCORE, **{"x-request-id": f"stats-{i}"}).status_code == 200
    args = ["stats", ENDPOINT, "--storage", stack.storage, "--router-url", stack.router,
            "--interval", "0.2"]  # fmt: skip
    assert scorefn([*args, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    rows = {row["deployment"]: row for row in document["deployments"]}
    assert document["router"] == "ok"
    blue, green = rows["blue"], rows["green"]
    router = fetch(stack.router)
    sent = total(router, REQUESTS, role="router", endpoint=ENDPOINT, deployment="blue")
    assert blue["source"] == "router" and blue["requests"] == sent >= 5
    assert 0 < blue["p50_ms"] <= blue["p99_ms"]
    assert blue["batch_rows"] >= 1
    assert 0 <= blue["error_rate"] < 1  # earlier tests sent a few 400s
    assert green["requests"] == 0 and green["p50_ms"] is None  # traffic 0: mirror only
    assert 0 <= green["mirror_agreement"] <= 1
    assert scorefn(args) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0] == f"endpoint {ENDPOINT} (req/s over 0.2 s)"
    assert table.splitlines()[1].split() == ["deployment", "source", "requests", "req/s",
                                             "p50", "ms", "p99", "ms", "errors", "batch",
                                             "rows", "mirror", "agree"]  # fmt: skip


def test_stats_command_without_metrics_says_how_to_get_them(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.cli import main as scorefn

    (dead,) = free_ports(1)
    code = scorefn(["stats", ENDPOINT, "--storage", stack.storage, "--interval", "0",
                    "--router-url", f"http://127.0.0.1:{dead}", "--port-shift", "1"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        f"scorefn: no metrics: neither the router (http://127.0.0.1:{dead}) nor a deployment "
        f"of '{ENDPOINT}' answered GET /metrics; start them with "
        "SCOREFN_TELEMETRY_EXPORTER=prometheus"
    )
    assert scorefn(["stats", "no-such-endpoint", "--storage", stack.storage]) == 1
    assert "no-such-endpoint" in capsys.readouterr().err


def test_collection_storage_down_changes_no_response(
    stack: Stack, example_models: Path, tmp_path: Path
) -> None:
    port, dead = free_ports(2)
    dead_storage = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
        f"KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:{dead}/devstoreaccount1;"
    )
    env = {
        "APP_ROLE": "scoring",
        "SCOREFN_MODELS_DIR": str(example_models),
        "SCOREFN_MODELS": "fraud:1",
        "SCOREFN_DEPLOYMENT": "blue",
        "AzureWebJobsStorage": stack.storage,
        "SCOREFN_TELEMETRY_EXPORTER": "prometheus",
        "SCOREFN_TELEMETRY_COLLECT_RATE": "1",
        "SCOREFN_TELEMETRY_COLLECT_STORAGE": dead_storage,
        "SCOREFN_TELEMETRY_COLLECT_FLUSH_S": "0.1",
        **{key: value.replace("tl-", "td-").replace("tljobs", "tdjobs")
           for key, value in BATCH.items()},
    }  # fmt: skip
    host = HostProcess("function_app:app", port=port, cwd=ROOT, storage=stack.storage,
                       host_id="tele-dead", log_path=tmp_path / "dead.log", env=env)  # fmt: skip
    host.start(timeout=90)
    try:
        _wait(lambda: httpx.get(f"{host.base_url}/api/v2/health/ready").status_code == 200)
        bodies = [{"input_data": {"columns": COLUMNS, "data": [[a, 3, 0.5, 10, 0, 2, 20, 1]]}}
                  for a in range(1, 41)]  # fmt: skip
        for body in bodies:
            down = httpx.post(f"{host.base_url}/api/score", json=body, timeout=30)
            healthy = httpx.post(f"{stack.blue}/api/score", json=body, timeout=30)
            assert (down.status_code, down.json()) == (healthy.status_code, healthy.json())
        records = "scorefn_datacollection_records_total"

        def lost() -> float:
            return total(fetch(host.base_url), records, outcome="failed") + total(
                fetch(host.base_url), records, outcome="dropped"
            )

        _wait(lambda: lost() == len(bodies), timeout=60)
        assert total(fetch(host.base_url), records, outcome="written") == 0
    finally:
        host.stop()
