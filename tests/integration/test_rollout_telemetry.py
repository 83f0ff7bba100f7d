"""Rollout and bandit decisions as metrics and spans (SDK in-memory exporters), the
ledger sweep, arm statistics per experiment, and flushes that fail while storage is
down; on Azurite, with the runtime and controller in this process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.errors import NotFoundError, RequestError, UpstreamError
from shared.localhost.azurite import AzuriteProcess, find_azurite_binary
from shared.localhost.ports import free_ports
from shared.rollout.controller import RolloutController, start_rollout
from shared.rollout.lease import ControllerLease
from shared.rollout.ledger import RequestLedger, Served
from shared.rollout.runtime import StrategyRuntime
from shared.rollout.state import RolloutStore
from shared.rollout.tables import Tables
from shared.rollout.windows import Counts, WindowStore, latency_bin
from shared.routing.bandit import ArmStats, fingerprint
from shared.routing.endpoint import EndpointSpec
from shared.routing.store import EndpointStore
from shared.settings import TelemetrySettings
from shared.telemetry.setup import Telemetry, setup_telemetry
from shared.telemetry.state import TELEMETRY

pytestmark = pytest.mark.integration


@pytest.fixture
def telemetry() -> Iterator[tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]]:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    handle = setup_telemetry(TelemetrySettings.model_validate({}), role="router",
                             span_exporters=[spans], metric_readers=[reader])  # fmt: skip
    try:
        yield handle, spans, reader
    finally:
        TELEMETRY.reset()


def _points(reader: InMemoryMetricReader, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
    """Data points of metric ``name``: sorted attribute items -> value."""
    data = reader.get_metrics_data()
    out: dict[tuple[tuple[str, Any], ...], Any] = {}
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for p in metric.data.data_points:
                        out[tuple(sorted((p.attributes or {}).items()))] = p.value  # type: ignore[union-attr]
    return out


def _value(reader: InMemoryMetricReader, name: str, **labels: Any) -> Any:
    return _points(reader, name).get(tuple(sorted(labels.items())))


def _bandit_spec(name: str, traffic: dict[str, int], **bandit: Any) -> EndpointSpec:
    return EndpointSpec.model_validate({
        "name": name, "auth": {"mode": "none"},
        "deployments": [{"name": d, "models": ["fraud"], "local_port": 9000 + i}
                        for i, d in enumerate(traffic)],
        "traffic": {"mode": "bandit", **traffic},
        "bandit": {"warmup_requests": 0, "feedback_window_s": 60, **bandit},
    })  # fmt: skip


def _fb(request_id: Any, reward: Any) -> bytes:
    return orjson.dumps({"request_id": request_id, "reward": reward})


# ------------------------------------------------------------------ feedback, arms
def test_feedback_and_arm_metrics_match_what_happened(
    azurite: AzuriteProcess,
    telemetry: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    handle, spans, reader = telemetry
    now = [time.time()]
    runtime = StrategyRuntime(Tables.from_connection_string(azurite.connection_string),
                              clock=lambda: now[0], flush_s=3600)  # fmt: skip
    spec = _bandit_spec("tm-feedback", {"blue": 50, "green": 50})

    async def scenario() -> list[str]:
        results: list[str] = []
        for i in range(30):  # blue serves 0..19, green 20..29
            runtime.served(spec, "blue" if i < 20 else "green", f"r{i}")
        for i in range(12):  # 12 counted: rewards 1 on green only
            answer = await runtime.feedback(spec, _fb(f"r{i + 15}", int(i + 15 >= 20)))
            results.append("counted" if answer["counted"] else "duplicate")
        answer = await runtime.feedback(spec, _fb("r15", 1))
        results.append("duplicate" if answer["duplicate"] else "counted")
        for body in (_fb("never", 1), _fb("r1", 0.5), _fb("r1", "yes"), b"{", _fb(7, 1)):
            try:
                await runtime.feedback(spec, body)
            except NotFoundError:
                results.append("unknown")
            except RequestError:
                results.append("invalid")
        await runtime.flush()  # ids to the ledger; arm totals and shares
        now[0] += 61  # past the feedback window
        try:
            await runtime.feedback(spec, _fb("r2", 1))
        except NotFoundError as exc:
            assert "has expired: it was served 61 s ago" in str(exc)
            results.append("expired")
        await runtime.aclose()
        return results

    results = asyncio.run(scenario())
    handle.force_flush()
    expected = {r: results.count(r) for r in set(results)}
    assert expected == {"counted": 12, "duplicate": 1, "unknown": 1, "invalid": 4, "expired": 1}
    feedback = {dict(k)["result"]: v for k, v in _points(reader, "scorefn.bandit.feedback").items()}
    assert feedback == expected
    assert all(dict(k)["endpoint"] == "tm-feedback"
               for k in _points(reader, "scorefn.bandit.feedback"))  # fmt: skip
    # one span per feedback request, its result as an attribute
    fb_spans = [s for s in spans.get_finished_spans() if s.name == "scorefn.bandit.feedback"]
    span_results = [str((s.attributes or {})["scorefn.feedback.result"]) for s in fb_spans]
    assert sorted(span_results) == sorted(results)
    counted = [s for s in fb_spans if (s.attributes or {})["scorefn.feedback.result"] == "counted"]
    assert {(s.attributes or {})["deployment"] for s in counted} == {"blue", "green"}
    # arm choices and the arm gauges equal the stored statistics
    assert _value(reader, "scorefn.bandit.choices", endpoint="tm-feedback",
                  deployment="blue") == 20  # fmt: skip
    assert _value(reader, "scorefn.bandit.choices", endpoint="tm-feedback",
                  deployment="green") == 10  # fmt: skip
    labels = {"endpoint": "tm-feedback"}
    assert _value(reader, "scorefn.bandit.pulls", deployment="blue", **labels) == 20
    assert _value(reader, "scorefn.bandit.pulls", deployment="green", **labels) == 10
    assert _value(reader, "scorefn.bandit.mean_reward", deployment="blue", **labels) == 0.0
    assert _value(reader, "scorefn.bandit.mean_reward", deployment="green", **labels) == 1.0
    # Beta(1 + 7, 1 + 0) for green, Beta(1 + 0, 1 + 5) for blue
    assert _value(reader, "scorefn.bandit.posterior_mean", deployment="green",
                  **labels) == pytest.approx(8 / 9)  # fmt: skip
    assert _value(reader, "scorefn.bandit.posterior_mean", deployment="blue",
                  **labels) == pytest.approx(1 / 7)  # fmt: skip
    shares = {a: _value(reader, "scorefn.bandit.share", deployment=a, **labels)
              for a in ("blue", "green")}  # fmt: skip
    assert shares["green"] > 0.9 and shares["blue"] == pytest.approx(1 - shares["green"])
    assert _value(reader, "scorefn.strategy.flushes", outcome="ok") >= 1


# ------------------------------------------------------------------ rollback, gates
def test_rollback_emits_one_rollback_with_its_gate_and_an_evaluation_span(
    azurite: AzuriteProcess,
    telemetry: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    handle, spans, reader = telemetry
    conn = azurite.connection_string
    tables = Tables.from_connection_string(conn)
    endpoints = EndpointStore.from_connection_string(conn, table="tmrollbackendpoints")
    name = "tm-rollback"
    endpoints.apply(EndpointSpec.model_validate({
        "name": name, "auth": {"mode": "none"},
        "deployments": [{"name": d, "models": ["fraud"], "local_port": 9000 + i}
                        for i, d in enumerate(("blue", "bad"))],
        "traffic": {"blue": 100, "bad": 0},
    }))  # fmt: skip
    started = time.time() - 30
    start_rollout(tables, endpoints, name, candidate="bad", steps=[10, 50, 100], bake_s=600,
                  clock=lambda: started)  # fmt: skip
    bucket = int(started) + 5
    fast = [0] * 64
    fast[latency_bin(0.004)] = 200
    WindowStore(tables).write("elsewhere", [
        (name, "blue", bucket, Counts(200, 0, list(fast))),
        (name, "bad", bucket, Counts(200, 40, list(fast))),
    ])  # fmt: skip
    blobs = BlobServiceClient.from_connection_string(conn)
    lease = ControllerLease(blobs.get_container_client("tm-locks-rollback"), duration_s=15)
    controller = RolloutController(tables, endpoints, lease, instance="tm")
    try:
        assert f"{name}: rolled back" in controller.tick()
        assert not [line for line in controller.tick() if line.startswith(name)]  # failed
    finally:
        lease.release()
    handle.force_flush()
    assert _points(reader, "scorefn.rollout.rollbacks") == {
        (("endpoint", name), ("gate", "error_rate_increase")): 1}  # fmt: skip
    events = {dict(k)["event"]: v for k, v in _points(reader, "scorefn.rollout.events").items()
              if dict(k)["endpoint"] == name}  # fmt: skip
    assert events == {"started": 1, "rolled_back": 1}
    assert _value(reader, "scorefn.rollout.step", endpoint=name, candidate="bad") == 0
    assert _value(reader, "scorefn.rollout.evaluations", endpoint=name, decision="fail") == 1
    assert _value(reader, "scorefn.rollout.gate.value", endpoint=name,
                  gate="error_rate_increase") == pytest.approx(0.2)  # fmt: skip
    assert _value(reader, "scorefn.rollout.gate.value", endpoint=name,
                  gate="p99_latency_ratio") == pytest.approx(1.0)  # fmt: skip
    assert _value(reader, "scorefn.rollout.window.requests", endpoint=name, deployment="bad",
                  side="candidate") == 200  # fmt: skip
    assert _value(reader, "scorefn.rollout.window.error_rate", endpoint=name,
                  deployment="bad", side="candidate") == pytest.approx(0.2)  # fmt: skip
    evaluations = [s for s in spans.get_finished_spans() if s.name == "scorefn.rollout.evaluate"]
    assert len(evaluations) == 1
    attributes = dict(evaluations[0].attributes or {})
    assert attributes["endpoint"] == name and attributes["candidate"] == "bad"
    assert attributes["scorefn.rollout.decision"] == "fail"
    assert attributes["scorefn.gate.error_rate_increase"] == pytest.approx(0.2)
    assert (attributes["scorefn.candidate.requests"], attributes["scorefn.baseline.requests"]) == (
        200, 200)  # fmt: skip
    stored = RolloutStore(tables).find(name)
    assert stored is not None and stored.rollout.failure is not None
    assert stored.rollout.failure["gate"] == "error_rate_increase"


# ------------------------------------------------------------------ sweep
def test_timer_sweeps_expired_ids_in_bounded_runs_and_stale_arms(azurite: AzuriteProcess) -> None:
    conn = azurite.connection_string
    tables = Tables.from_connection_string(conn)
    endpoints = EndpointStore.from_connection_string(conn, table="tmsweependpoints")
    spec = _bandit_spec("tm-sweep", {"blue": 50, "green": 50})
    endpoints.apply(spec)
    now = time.time()
    ledger = RequestLedger(tables)
    ledger.write([Served(spec.name, f"old-{i}", "blue", now - 120) for i in range(250)])
    ledger.write([Served(spec.name, f"new-{i}", "green", now - 5) for i in range(20)])
    runtime = StrategyRuntime(tables, flush_s=3600)
    old = "an-earlier-experiment"
    assert spec.bandit is not None
    current = fingerprint(spec.bandit, spec.traffic)
    runtime.arms.add(spec.name, {"red": ArmStats(5), "blue": ArmStats(7)}, old)
    runtime.arms.add(spec.name, {"green": ArmStats(3)}, current)
    blobs = BlobServiceClient.from_connection_string(conn)
    lease = ControllerLease(blobs.get_container_client("tm-locks-sweep"), duration_s=15)
    controller = RolloutController(tables, endpoints, lease, instance="tm", sweep_every_s=3600,
                                   sweep_limit=100)  # fmt: skip
    table = TableServiceClient.from_connection_string(conn).get_table_client("banditrequests")

    def left() -> tuple[int, int]:
        rows = list(table.query_entities(
            "PartitionKey ge 'tm-sweep-' and PartitionKey lt 'tm-sweep.'"))  # fmt: skip
        expired = sum(1 for r in rows if r["served_at"] < now - 60)
        return expired, len(rows) - expired

    try:
        lines = controller.tick()  # 100 at most; the rest at the next ticks
        assert left() == (150, 20)
        assert f"{spec.name}: swept 100 request ids, 2 stale arms" in lines
        controller.tick()
        controller.tick()
        assert left() == (0, 20)
        assert controller.tick() == []  # clean: next run in sweep_every_s
    finally:
        lease.release()
    rows = {e["RowKey"]: e["experiment"] for e in TableServiceClient.from_connection_string(
        conn).get_table_client("banditarms").query_entities("PartitionKey eq 'tm-sweep'")}  # fmt: skip
    assert rows == {"green": current}
    assert runtime.arms.read(spec.name, current) == {"green": ArmStats(3)}


# ------------------------------------------------------------------ experiments
def test_arm_statistics_restart_when_the_arms_change(azurite: AzuriteProcess) -> None:
    tables = Tables.from_connection_string(azurite.connection_string)
    runtime = StrategyRuntime(tables, flush_s=3600)
    first = _bandit_spec("tm-arms", {"blue": 50, "green": 50})
    reweighted = _bandit_spec("tm-arms", {"blue": 80, "green": 20}, policy="epsilon_greedy")
    other_arms = _bandit_spec("tm-arms", {"blue": 50, "red": 50})
    real = _bandit_spec("tm-arms", {"blue": 50, "red": 50}, reward="real", reward_max=10)

    async def scenario() -> list[dict[str, Any]]:
        views = []
        for i in range(6):
            runtime.served(first, "blue" if i % 2 else "green", f"a{i}")
        await runtime.feedback(first, _fb("a1", 1))
        await runtime.flush()
        views.append(await runtime.describe(first))
        for i in range(4):  # same arms, other weights and policy: same experiment
            runtime.served(reweighted, "blue", f"b{i}")
        await runtime.flush()
        views.append(await runtime.describe(reweighted))
        for i in range(2):  # red replaces green: a new experiment
            runtime.served(other_arms, "red", f"c{i}")
        await runtime.flush()
        views.append(await runtime.describe(other_arms))
        runtime.served(real, "blue", "d0")  # same arms, rewards mean something else
        await runtime.flush()
        views.append(await runtime.describe(real))
        await runtime.aclose()
        return views

    views = asyncio.run(scenario())
    pulls = [{a: v["pulls"] for a, v in view["arms"].items()} for view in views]
    assert pulls == [{"blue": 3, "green": 3}, {"blue": 7, "green": 3}, {"blue": 0, "red": 2},
                     {"blue": 1, "red": 0}]  # fmt: skip
    assert views[0]["arms"]["blue"]["feedback"] == 1
    assert views[1]["experiment"] == views[0]["experiment"] != views[2]["experiment"]
    assert views[3]["experiment"] != views[2]["experiment"]


# ------------------------------------------------------------------ storage down
def test_counts_and_ids_of_a_failed_flush_reach_the_next_one(
    tmp_path: Path,
    telemetry: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    handle, _, reader = telemetry
    store = AzuriteProcess(tmp_path / "azurite", binary=find_azurite_binary()).start()
    try:
        service = TableServiceClient.from_connection_string(store.connection_string,
                                                            retry_total=0)  # fmt: skip
        runtime = StrategyRuntime(Tables(service), bucket_s=1, flush_s=3600)
        spec = _bandit_spec("tm-outage", {"blue": 50, "green": 50})

        async def scenario() -> dict[str, Any]:
            for i in range(40):
                runtime.served(spec, "blue" if i % 4 else "green", f"o{i}")
                runtime.record(spec.name, "blue" if i % 4 else "green", error=i == 3,
                               elapsed_s=0.003)  # fmt: skip
            await runtime.flush()  # tables created, all written
            for i in range(40, 100):
                runtime.served(spec, "blue" if i % 4 else "green", f"o{i}")
                runtime.record(spec.name, "blue" if i % 4 else "green", error=False,
                               elapsed_s=0.003)  # fmt: skip
            counted = await runtime.feedback(spec, _fb("o50", 1))  # known locally only
            assert counted["counted"] is True
            store.stop()
            for _ in range(2):  # storage down: the flush fails, nothing is dropped
                with pytest.raises(UpstreamError):
                    await runtime.flush()
            for i in range(100, 120):
                runtime.served(spec, "green", f"o{i}")
                runtime.record(spec.name, "green", error=False, elapsed_s=0.003)
            again = await runtime.feedback(spec, _fb("o50", 1))  # still known: duplicate
            assert again["duplicate"] is True
            store.start()
            await runtime.flush()
            view = await runtime.describe(spec)
            late = await runtime.feedback(spec, _fb("o110", 0))  # from the ledger now
            assert late["counted"] is True and late["deployment"] == "green"
            await runtime.aclose()
            return view

        view = asyncio.run(scenario())
        assert {a: v["pulls"] for a, v in view["arms"].items()} == {"blue": 75, "green": 45}
        assert view["arms"]["blue"]["feedback"] == 1  # o50 (served by blue)
        assert view["ids_not_remembered"] == 0
        tables = Tables.from_connection_string(store.connection_string)
        totals = WindowStore(tables).totals(spec.name, start=0, end=time.time() + 10)
        assert (totals["blue"].requests, totals["green"].requests) == (75, 45)
        assert (totals["blue"].errors, totals["green"].errors) == (1, 0)
        ledger = RequestLedger(tables)
        claims = [ledger.claim(spec.name, f"o{i}", window_s=60, now=time.time())
                  for i in range(120)]  # fmt: skip
        results = [c.result for c in claims]
        assert results.count("counted") == 118  # every id was written; o50 and o110 rewarded
        assert results[50] == results[110] == "duplicate"
        handle.force_flush()
        assert _value(reader, "scorefn.strategy.flushes", outcome="failed") == 2
    finally:
        store.stop()


def test_what_is_kept_over_failed_flushes_is_bounded_and_counted(
    telemetry: tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader],
) -> None:
    handle, _, reader = telemetry
    (dead,) = free_ports(1)
    conn = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
            f"TableEndpoint=http://127.0.0.1:{dead}/devstoreaccount1;")  # fmt: skip
    now = [1_000_000.0]
    runtime = StrategyRuntime(
        Tables(TableServiceClient.from_connection_string(conn, retry_total=0)),
        bucket_s=1, clock=lambda: now[0], max_pending_ids=6, max_kept_buckets=2, flush_s=3600,
    )  # fmt: skip
    spec = _bandit_spec("tm-bound", {"blue": 50, "green": 50})

    async def scenario() -> dict[str, str]:
        for i in range(4):  # four 1-s buckets of outcomes, four ids
            runtime.served(spec, "blue", f"k{i}")
            runtime.record(spec.name, "blue", error=False, elapsed_s=0.002)
            now[0] += 1
        flush = asyncio.ensure_future(runtime.flush())
        await asyncio.sleep(0)  # the flush took its batch and waits for storage
        for i in range(4, 8):  # four new ids meanwhile: room for 2 of the 4 kept
            runtime.served(spec, "green", f"k{i}")
        with pytest.raises(UpstreamError):
            await flush
        runtime.served(spec, "green", "k8")  # full: not remembered
        results: dict[str, str] = {}
        for i in range(9):  # kept ids take feedback while storage is down; the others
            try:  # must be looked up in the ledger, which cannot be reached
                answer = await runtime.feedback(spec, _fb(f"k{i}", 1))
                results[f"k{i}"] = answer["deployment"]
            except UpstreamError:
                results[f"k{i}"] = "storage down"
        return results

    results = asyncio.run(scenario())
    assert results == {"k0": "storage down", "k1": "storage down", "k2": "blue", "k3": "blue",
                       "k4": "green", "k5": "green", "k6": "green", "k7": "green",
                       "k8": "storage down"}  # fmt: skip
    assert runtime.outcomes.waiting == 2  # the two newest of four buckets
    handle.force_flush()
    assert _value(reader, "scorefn.strategy.dropped", kind="request_ids") == 2
    assert _value(reader, "scorefn.strategy.dropped", kind="outcome_buckets") == 2
    assert _value(reader, "scorefn.strategy.flushes", outcome="failed") == 1
    assert _value(reader, "scorefn.bandit.feedback", endpoint="tm-bound", result="failed") == 3
