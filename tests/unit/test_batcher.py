"""The dynamic batcher: every caller gets exactly its own rows, under any interleaving.

Correctness runs a real tiny ONNX graph on a real onnxruntime session and compares each
caller's outputs with running that request alone. Scheduling, overload and failure tests
use plain Python runners (the ``Runner`` seam is ours) that record what they were given.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from shared.errors import (
    DeadlineExceededError,
    EmptyBatchError,
    ExecutionError,
    NonFiniteError,
    NotReadyError,
    OverloadedError,
    ShapeError,
)
from shared.pipeline.batcher import Batcher, Tensors
from shared.pipeline.session import IR_VERSION
from shared.pipeline.spec import BatchingSpec, PackageSpec
from shared.pipeline.validate import Validated, Validator

OUTPUTS = ["y", "ids", "version"]


def _graph() -> bytes:
    """Inputs x [N, 4] float, id [N] int64. Outputs y = x @ W + b [N, 3], ids = id + 1000
    [N], and a constant scalar ``version`` (not row-aligned). Integer-valued weights keep
    float results exact whatever the batch size, so outputs can be compared exactly."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    b = np.array([1, -2, 3], dtype=np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["y"]),
        helper.make_node("Add", ["id", "offset"], ["ids"]),
        helper.make_node(
            "Constant",
            [],
            ["version"],
            value=numpy_helper.from_array(np.array(7.0, dtype=np.float32)),
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "batcher_test",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4]),
            helper.make_tensor_value_info("id", TensorProto.INT64, [None]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("version", TensorProto.FLOAT, []),
        ],
        initializer=[
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.array(1000, dtype=np.int64), "offset"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION
    )
    return bytes(model.SerializeToString())


@pytest.fixture(scope="module")
def session() -> ort.InferenceSession:
    return ort.InferenceSession(_graph(), providers=["CPUExecutionProvider"])


class OnnxRunner:
    """Runs the real session and records the request ids of every batch it was given."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.batches: list[np.ndarray] = []

    def __call__(self, inputs: Tensors) -> Tensors:
        self.batches.append(inputs["id"].copy())
        return dict(zip(OUTPUTS, self.session.run(OUTPUTS, inputs), strict=True))


def _request(request_id: int, rows: int, seed: int = 0) -> Tensors:
    rng = np.random.default_rng(seed * 100_003 + request_id)
    x = rng.integers(-9, 10, size=(rows, 4)).astype(np.float32)
    return {"x": x, "id": np.full(rows, request_id, dtype=np.int64)}


def _alone(session: ort.InferenceSession, inputs: Tensors) -> Tensors:
    return dict(zip(OUTPUTS, session.run(OUTPUTS, inputs), strict=True))


def _requests_of(batch: np.ndarray) -> list[int]:
    """Request ids of one runner batch, in order (each request's rows are contiguous)."""
    ids = [int(batch[0])]
    for value in batch[1:]:
        if int(value) != ids[-1]:
            ids.append(int(value))
    return ids


class GateRunner:
    """A Python runner that records its batches and blocks inside calls until opened.

    ``entered`` is set when a call starts, so a test knows a batch is in flight.
    """

    def __init__(self, *, blocked: bool = True, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.fail_on = fail_on
        if not blocked:
            self.gate.set()

    def __call__(self, inputs: Tensors) -> Tensors:
        self.threads.add(threading.get_ident())
        self.batches.append([int(v) for v in inputs["id"]])
        self.entered.set()
        if not self.gate.wait(10):
            raise TimeoutError("test gate never opened")
        if self.fail_on is not None and self.fail_on in inputs["id"]:
            raise RuntimeError("boom")
        return {"double": inputs["id"] * 2, "total": np.array(inputs["id"].sum())}

    async def wait_entered(self) -> None:
        while not self.entered.is_set():
            await asyncio.sleep(0.001)
        self.entered.clear()


def _ids(*values: int) -> Tensors:
    return {"id": np.array(values, dtype=np.int64)}


async def _until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds (bounded, so a bug fails, not hangs)."""
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never became true")


# -- correctness under concurrency -------------------------------------------------------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    max_batch_size=st.integers(1, 10),
    max_delay_ms=st.sampled_from([0.0, 0.5, 2.0]),
    requests=st.lists(
        st.tuples(st.integers(1, 14), st.floats(0, 3)),  # rows, start delay (ms)
        min_size=1,
        max_size=24,
    ),
    seed=st.integers(0, 1000),
)
def test_concurrent_callers_get_exactly_their_rows(
    session: ort.InferenceSession,
    max_batch_size: int,
    max_delay_ms: float,
    requests: list[tuple[int, float]],
    seed: int,
) -> None:
    runner = OnnxRunner(session)
    spec = BatchingSpec(max_batch_size=max_batch_size, max_delay_ms=max_delay_ms)
    inputs = [_request(i, rows, seed) for i, (rows, _) in enumerate(requests)]

    async def scenario() -> list[Tensors]:
        async with Batcher(runner, spec, name="lin:1") as batcher:

            async def call(i: int) -> Tensors:
                await asyncio.sleep(requests[i][1] / 1000)
                return await batcher.infer(inputs[i])

            results = await asyncio.gather(*(call(i) for i in range(len(requests))))
            assert batcher.queued_rows == 0
            return results

    results = asyncio.run(scenario())
    for given_inputs, got in zip(inputs, results, strict=True):
        want = _alone(session, given_inputs)
        assert set(got) == set(OUTPUTS)
        np.testing.assert_array_equal(got["y"], want["y"])
        np.testing.assert_array_equal(got["ids"], want["ids"])
        assert got["version"] == 7.0

    ran: list[int] = []
    for batch in runner.batches:
        members = _requests_of(batch)
        ran.extend(members)
        if len(batch) > max_batch_size:
            assert len(members) == 1, f"{len(batch)} rows > {max_batch_size} from {members}"
    assert sorted(ran) == list(range(len(requests))), "each request runs once, whole"


@settings(max_examples=40, deadline=None)
@given(
    plan=st.lists(
        st.tuples(
            st.integers(1, 6),  # rows
            st.floats(0, 2),  # start delay (ms)
            st.one_of(st.none(), st.floats(0, 4)),  # cancel after (ms), or never
        ),
        min_size=1,
        max_size=20,
    ),
    max_batch_size=st.integers(1, 8),
)
def test_cancellations_leave_no_trace(
    plan: list[tuple[int, float, float | None]], max_batch_size: int
) -> None:
    """Random cancellations: survivors still get their own rows, nothing runs twice, the
    queue accounting returns to zero and the batcher keeps working."""
    seen: list[list[int]] = []

    def run(inputs: Tensors) -> Tensors:
        seen.append([int(v) for v in inputs["id"]])
        time.sleep(0.0005)  # long enough for cancellations to land mid-run too
        return {"echo": inputs["id"].copy()}

    async def scenario() -> None:
        spec = BatchingSpec(max_batch_size=max_batch_size, max_delay_ms=1.0)
        async with Batcher(run, spec, name="echo") as batcher:

            async def call(i: int, rows: int, delay: float) -> np.ndarray:
                await asyncio.sleep(delay / 1000)
                return (await batcher.infer(_ids(*([i] * rows))))["echo"]

            tasks = [
                asyncio.ensure_future(call(i, rows, delay))
                for i, (rows, delay, _) in enumerate(plan)
            ]
            for task, (_, _, cancel_after) in zip(tasks, plan, strict=True):
                if cancel_after is not None:
                    asyncio.get_running_loop().call_later(cancel_after / 1000, task.cancel)
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            for i, ((rows, _, cancel_after), got) in enumerate(zip(plan, outcomes, strict=True)):
                if isinstance(got, asyncio.CancelledError):
                    assert cancel_after is not None
                else:
                    assert isinstance(got, np.ndarray)
                    np.testing.assert_array_equal(got, [i] * rows)
            assert batcher.queued_rows == 0
            ran = [i for batch in seen for i in dict.fromkeys(batch)]
            assert len(ran) == len(set(ran)), "no request runs twice"
            after = await batcher.infer(_ids(99))
            np.testing.assert_array_equal(after["echo"], [99])

    asyncio.run(scenario())


async def test_incompatible_requests_run_in_separate_batches() -> None:
    seen: list[tuple[tuple[str, ...], str, int]] = []

    def run(inputs: Tensors) -> Tensors:
        a = inputs["a"]
        seen.append((tuple(sorted(inputs)), a.dtype.str, a.shape[0]))
        return {"sum": a.reshape(a.shape[0], -1).sum(axis=1)}

    kinds: list[Tensors] = [
        {"a": np.ones((2, 3), np.float32)},
        {"a": np.ones((1, 3), np.float64)},  # other dtype
        {"a": np.ones((2, 5), np.float32)},  # other trailing shape
        {"a": np.ones((1, 3), np.float32), "b": np.ones(1)},  # other names
        {"b": np.zeros(2), "a": np.ones((2, 3), np.float32)},  # same names, other order
        {"a": np.ones((3, 3), np.float32)},
    ]
    spec = BatchingSpec(max_batch_size=100, max_delay_ms=20)
    async with Batcher(run, spec, name="mixed") as batcher:
        results = await asyncio.gather(*(batcher.infer(k) for k in kinds))
    for k, got in zip(kinds, results, strict=True):
        np.testing.assert_array_equal(got["sum"], k["a"].reshape(len(k["a"]), -1).sum(axis=1))
    assert sorted(seen) == sorted(
        [
            (("a",), "<f4", 5),  # the two [*, 3] float32 requests, together
            (("a",), "<f8", 1),
            (("a",), "<f4", 2),
            (("a", "b"), "<f4", 3),  # key order does not matter
        ]
    )


async def test_validated_requests_join_plain_ones_of_the_same_signature() -> None:
    """The validator's fast path hands the batcher rows and signature (``Validated``);
    they group exactly as the batcher's own signature of the same arrays would."""
    package = PackageSpec.model_validate(
        {
            "name": "two",
            "version": "1",
            "inputs": [
                {"name": "b", "datatype": "FP64", "shape": [-1]},
                {"name": "a", "datatype": "FP32", "shape": [-1, 3]},
            ],
            "outputs": [{"name": "sum", "datatype": "FP32", "shape": [-1]}],
            "steps": [{"onnx": "model.onnx"}],
        }
    )
    validator = Validator(package)
    seen: list[int] = []

    def run(inputs: Tensors) -> Tensors:
        seen.append(len(inputs["a"]))
        return {"sum": inputs["a"].sum(axis=1) + inputs["b"]}

    plain = {"a": np.ones((2, 3), np.float32), "b": np.zeros(2)}
    valid = validator.validate({"b": np.full(1, 5.0), "a": np.ones((1, 3), np.float32)})
    assert type(valid) is Validated and (valid.rows, len(valid.signature)) == (1, 2)
    again = validator.validate(valid)  # validating validated inputs stays on the fast path
    assert type(again) is Validated and again.signature == valid.signature
    other = {"a": np.ones((4, 3), np.float64), "b": np.zeros(4)}  # other dtype
    spec = BatchingSpec(max_batch_size=100, max_delay_ms=20)
    async with Batcher(run, spec, name="validated") as batcher:
        results = await asyncio.gather(*(batcher.infer(k) for k in (plain, valid, other)))
    assert sorted(seen) == [3, 4]  # plain + validated together; the float64 one alone
    np.testing.assert_array_equal(results[0]["sum"], [3.0, 3.0])
    np.testing.assert_array_equal(results[1]["sum"], [8.0])
    np.testing.assert_array_equal(results[2]["sum"], [3.0] * 4)


async def test_output_that_is_not_row_aligned_goes_whole_to_every_caller(
    session: ort.InferenceSession,
) -> None:
    spec = BatchingSpec(max_batch_size=8, max_delay_ms=50)
    async with Batcher(OnnxRunner(session), spec, name="lin:1") as batcher:
        a, b = await asyncio.gather(batcher.infer(_request(1, 2)), batcher.infer(_request(2, 3)))
    assert a["y"].shape == (2, 3) and b["y"].shape == (3, 3)
    assert a["version"].shape == () and a["version"] == 7.0 and b["version"] == 7.0
    assert not a["version"].flags.writeable, "a shared output is read-only"


# -- batch formation ----------------------------------------------------------------------


async def test_batches_never_exceed_max_rows_but_an_oversized_request_runs_alone() -> None:
    runner = GateRunner(blocked=False)
    spec = BatchingSpec(max_batch_size=4, max_delay_ms=20)
    async with Batcher(runner, spec, name="echo") as batcher:
        sizes = [1, 2, 10, 1, 3, 1, 1, 4, 5]
        calls = [batcher.infer(_ids(*([i] * n))) for i, n in enumerate(sizes)]
        results = await asyncio.gather(*calls)
    for i, (n, got) in enumerate(zip(sizes, results, strict=True)):
        np.testing.assert_array_equal(got["double"], [2 * i] * n)
    for batch in runner.batches:
        assert len(batch) <= 4 or len(set(batch)) == 1, batch
    # Arrival order is kept: the 10-row request is not overtaken by later small ones.
    assert [sorted(set(b)) for b in runner.batches] == [[0, 1], [2], [3, 4], [5, 6], [7], [8]]


async def test_next_batch_gathers_while_one_runs() -> None:
    runner = GateRunner()
    spec = BatchingSpec(max_batch_size=8, max_delay_ms=0)
    try:
        async with Batcher(runner, spec, name="echo") as batcher:
            first = asyncio.ensure_future(batcher.infer(_ids(0)))
            await runner.wait_entered()
            rest = [asyncio.ensure_future(batcher.infer(_ids(i))) for i in range(1, 6)]
            await _until(lambda: batcher.queued_rows == 5)
            runner.gate.set()
            await asyncio.gather(first, *rest)
    finally:
        runner.gate.set()
    # With no delay at all the queued five still left as one batch, sent on completion.
    assert runner.batches == [[0], [1, 2, 3, 4, 5]]
    assert list(batcher.stats.recent_batch_rows) == [1, 5]


async def test_lone_request_waits_about_max_delay() -> None:
    runner = GateRunner(blocked=False)
    async with Batcher(runner, BatchingSpec(max_delay_ms=60), name="echo") as batcher:
        start = time.perf_counter()
        await batcher.infer(_ids(1))
        waited = time.perf_counter() - start
    assert 0.05 <= waited < 0.5, waited


async def test_full_batch_does_not_wait_for_max_delay() -> None:
    runner = GateRunner(blocked=False)
    spec = BatchingSpec(max_batch_size=4, max_delay_ms=60_000)
    async with Batcher(runner, spec, name="echo") as batcher:
        start = time.perf_counter()
        await asyncio.gather(*(batcher.infer(_ids(i)) for i in range(4)))
        assert time.perf_counter() - start < 5
    assert runner.batches == [[0, 1, 2, 3]]


async def test_batching_disabled_runs_each_request_alone_off_the_loop() -> None:
    runner = GateRunner(blocked=False)
    spec = BatchingSpec(enabled=False, max_batch_size=64, max_delay_ms=60_000)
    async with Batcher(runner, spec, name="echo") as batcher:
        results = await asyncio.gather(*(batcher.infer(_ids(i, i)) for i in range(5)))
    assert sorted(runner.batches) == [[i, i] for i in range(5)]
    assert [list(r["double"]) for r in results] == [[2 * i, 2 * i] for i in range(5)]
    assert threading.get_ident() not in runner.threads
    assert len(runner.threads) == 1, "one dedicated worker thread"


async def test_batching_disabled_is_still_queue_bounded() -> None:
    runner = GateRunner()
    spec = BatchingSpec(enabled=False, max_queue_rows=2)
    try:
        async with Batcher(runner, spec, name="echo") as batcher:
            first = asyncio.ensure_future(batcher.infer(_ids(0)))
            await runner.wait_entered()
            queued = [asyncio.ensure_future(batcher.infer(_ids(i))) for i in (1, 2)]
            await _until(lambda: batcher.queued_rows == 2)
            with pytest.raises(OverloadedError):
                await batcher.infer(_ids(3))
            runner.gate.set()
            await asyncio.gather(first, *queued)
    finally:
        runner.gate.set()


# -- errors -------------------------------------------------------------------------------


async def test_full_queue_is_refused_with_overloaded_error() -> None:
    runner = GateRunner()
    spec = BatchingSpec(max_batch_size=2, max_delay_ms=0, max_queue_rows=5)
    try:
        async with Batcher(runner, spec, name="fraud:2") as batcher:
            running = asyncio.ensure_future(batcher.infer(_ids(0)))
            await runner.wait_entered()
            queued = [asyncio.ensure_future(batcher.infer(_ids(*([i] * 2)))) for i in (1, 2)]
            queued.append(asyncio.ensure_future(batcher.infer(_ids(3))))  # exactly full
            await _until(lambda: batcher.queued_rows == 5)
            with pytest.raises(OverloadedError) as caught:
                await batcher.infer(_ids(4, 4))
            assert str(caught.value) == (
                "model fraud:2 is overloaded: 5 rows are queued and this request adds 2; "
                "the limit is 5 queued rows. Retry after 1 s."
            )
            assert caught.value.retry_after == 1.0  # no throughput measured yet
            assert batcher.stats.rejected == 1
            assert batcher.queued_rows == 5, "a refused request leaves no trace"
            runner.gate.set()
            await asyncio.gather(running, *queued)
    finally:
        runner.gate.set()


async def test_retry_after_follows_measured_throughput() -> None:
    runner = GateRunner(blocked=False)
    spec = BatchingSpec(max_batch_size=10, max_delay_ms=0, max_queue_rows=10)
    try:
        async with Batcher(runner, spec, name="echo") as batcher:
            await batcher.infer(_ids(*range(10)))  # one measured batch
            rate = batcher.stats.rows_per_second
            runner.gate.clear()
            runner.entered.clear()
            running = asyncio.ensure_future(batcher.infer(_ids(*range(10))))
            await runner.wait_entered()
            queued = asyncio.ensure_future(batcher.infer(_ids(*range(10))))
            await _until(lambda: batcher.queued_rows == 10)
            with pytest.raises(OverloadedError) as caught:
                await batcher.infer(_ids(1))
            runner.gate.set()
            await asyncio.gather(running, queued)
    finally:
        runner.gate.set()
    want = round(min(60.0, max(0.001, 10 / rate)), 3)
    assert caught.value.retry_after == want, "time to drain the queue at the measured rate"
    assert str(caught.value).endswith(f"Retry after {want:g} s.")


async def test_a_lone_request_larger_than_the_queue_limit_is_admitted() -> None:
    runner = GateRunner(blocked=False)
    spec = BatchingSpec(max_batch_size=2, max_queue_rows=3)
    async with Batcher(runner, spec, name="echo") as batcher:
        got = await batcher.infer(_ids(*range(7)))
    assert list(got["double"]) == [2 * i for i in range(7)]


async def test_cancelled_caller_is_never_run() -> None:
    runner = GateRunner()
    spec = BatchingSpec(max_batch_size=8, max_delay_ms=0)
    try:
        async with Batcher(runner, spec, name="echo") as batcher:
            running = asyncio.ensure_future(batcher.infer(_ids(0)))
            await runner.wait_entered()
            gone = asyncio.ensure_future(batcher.infer(_ids(1, 1, 1)))
            kept = asyncio.ensure_future(batcher.infer(_ids(2)))
            await _until(lambda: batcher.queued_rows == 4)
            gone.cancel()
            with pytest.raises(asyncio.CancelledError):
                await gone
            assert batcher.queued_rows == 1, "the cancelled rows leave the queue at once"
            runner.gate.set()
            await asyncio.gather(running, kept)
    finally:
        runner.gate.set()
    assert runner.batches == [[0], [2]]
    assert batcher.stats.cancelled == 1


async def test_timeout_while_queued_raises_deadline_exceeded_and_never_runs() -> None:
    runner = GateRunner()
    spec = BatchingSpec(max_batch_size=8, max_delay_ms=0)
    try:
        async with Batcher(runner, spec, name="lin:1") as batcher:
            running = asyncio.ensure_future(batcher.infer(_ids(0)))
            await runner.wait_entered()
            with pytest.raises(DeadlineExceededError) as caught:
                await batcher.infer(_ids(1, 1), timeout=0.02)
            assert str(caught.value) == (
                "model lin:1 did not answer a request of 2 rows within 0.02 s; it was still queued"
            )
            assert batcher.queued_rows == 0
            runner.gate.set()
            await running
            after = await batcher.infer(_ids(3), timeout=5)
    finally:
        runner.gate.set()
    assert list(after["double"]) == [6]
    assert runner.batches == [[0], [3]]
    assert batcher.stats.expired == 1


async def test_timeout_while_running_fails_that_caller_only() -> None:
    runner = GateRunner()
    spec = BatchingSpec(max_batch_size=8, max_delay_ms=20)
    try:
        async with Batcher(runner, spec, name="lin:1") as batcher:
            impatient = asyncio.ensure_future(batcher.infer(_ids(1), timeout=0.05))
            patient = asyncio.ensure_future(batcher.infer(_ids(2, 2)))
            await runner.wait_entered()
            with pytest.raises(DeadlineExceededError) as caught:
                await impatient
            assert str(caught.value) == (
                "model lin:1 did not answer a request of 1 rows within 0.05 s; "
                "its batch was running"
            )
            runner.gate.set()
            got = await patient
    finally:
        runner.gate.set()
    assert runner.batches == [[1, 2, 2]]
    assert list(got["double"]) == [4, 4]


async def test_runner_exception_fails_the_batch_and_later_requests_still_work() -> None:
    runner = GateRunner(blocked=False, fail_on=13)
    spec = BatchingSpec(max_batch_size=8, max_delay_ms=20)
    async with Batcher(runner, spec, name="lin:1") as batcher:
        outcomes = await asyncio.gather(
            batcher.infer(_ids(13)), batcher.infer(_ids(1, 1)), return_exceptions=True
        )
        for err in outcomes:
            assert isinstance(err, ExecutionError)
            assert str(err) == "model lin:1 failed on a batch of 3 rows: RuntimeError('boom')"
            assert isinstance(err.__cause__, RuntimeError)
        assert outcomes[0] is not outcomes[1], "each caller gets its own exception"
        got = await batcher.infer(_ids(2))
    assert list(got["double"]) == [4]
    assert batcher.stats.failed == 2 and batcher.stats.batches == 2


async def test_execution_error_from_the_runner_keeps_its_message() -> None:
    def run(inputs: Tensors) -> Tensors:
        raise ExecutionError("model lin:1 failed: bad node")

    async with Batcher(run, BatchingSpec(max_delay_ms=0), name="lin:1") as batcher:
        with pytest.raises(ExecutionError) as caught:
            await batcher.infer(_ids(1))
    assert str(caught.value) == "model lin:1 failed: bad node (batch of 1 rows)"
    assert isinstance(caught.value.__cause__, ExecutionError)


async def test_request_inputs_must_agree_on_rows() -> None:
    async with Batcher(GateRunner(blocked=False), BatchingSpec(), name="lin:1") as batcher:
        with pytest.raises(ShapeError) as caught:
            await batcher.infer({"x": np.zeros((2, 4)), "id": np.zeros(3)})
        assert str(caught.value) == (
            "input 'id' has 3 rows but input 'x' has 2; "
            "all inputs of one request must have the same number of rows"
        )
        with pytest.raises(ShapeError) as scalar:
            await batcher.infer({"x": np.zeros(())})
        assert str(scalar.value) == (
            "input 'x' is a scalar; batching needs a first (rows) dimension"
        )
        with pytest.raises(EmptyBatchError) as empty:
            await batcher.infer({"x": np.zeros((0, 4))})
        assert str(empty.value) == "input 'x' has 0 rows; at least 1 is required"
        assert batcher.queued_rows == 0


# -- lifecycle ----------------------------------------------------------------------------


async def test_close_drains_queued_work_then_refuses() -> None:
    runner = GateRunner(blocked=False)
    batcher = Batcher(runner, BatchingSpec(max_delay_ms=60_000), name="lin:1")
    await batcher.start()
    calls = [asyncio.ensure_future(batcher.infer(_ids(i))) for i in range(3)]
    await _until(lambda: batcher.queued_rows == 3)
    start = time.perf_counter()
    await batcher.close()
    assert time.perf_counter() - start < 5, "draining does not wait for max_delay"
    assert [list((await c)["double"]) for c in calls] == [[0], [2], [4]]
    with pytest.raises(NotReadyError) as caught:
        await batcher.infer(_ids(9))
    assert str(caught.value) == "model lin:1 is shutting down"
    await batcher.close()  # idempotent


async def test_close_without_drain_fails_queued_requests() -> None:
    runner = GateRunner()
    batcher = Batcher(runner, BatchingSpec(max_batch_size=1, max_delay_ms=0), name="lin:1")
    await batcher.start()
    try:
        running = asyncio.ensure_future(batcher.infer(_ids(0)))
        await runner.wait_entered()
        queued = asyncio.ensure_future(batcher.infer(_ids(1)))
        await _until(lambda: batcher.queued_rows == 1)
        closing = asyncio.ensure_future(batcher.close(drain=False))
        with pytest.raises(NotReadyError) as caught:
            await queued
        assert str(caught.value) == "model lin:1 shut down before this request ran"
        runner.gate.set()
        assert list((await running)["double"]) == [0], "the running batch completes"
        await closing
    finally:
        runner.gate.set()
    assert runner.batches == [[0]]


async def test_infer_before_start_is_a_programming_error() -> None:
    batcher = Batcher(GateRunner(blocked=False), BatchingSpec(), name="lin:1")
    with pytest.raises(RuntimeError, match="batcher for model lin:1 is not started"):
        await batcher.infer(_ids(1))


async def test_stats_count_batches_rows_and_waits(session: ort.InferenceSession) -> None:
    spec = BatchingSpec(max_batch_size=4, max_delay_ms=5)
    async with Batcher(OnnxRunner(session), spec, name="lin:1") as batcher:
        await asyncio.gather(*(batcher.infer(_request(i, 1)) for i in range(6)))
        stats = batcher.stats
    assert stats.requests == 6 and stats.rows == 6
    assert stats.batches == len(stats.recent_batch_rows) == 2
    assert sorted(stats.recent_batch_rows) == [2, 4]
    assert stats.run_seconds > 0 and stats.rows_per_second > 0
    assert stats.queue_wait_seconds >= 0 and len(stats.recent_queue_wait) == 2


async def test_run_on_loop_runs_batches_on_the_loop_thread(session: ort.InferenceSession) -> None:
    threads: list[int] = []

    def run(inputs: Tensors) -> Tensors:
        threads.append(threading.get_ident())
        return _alone(session, inputs)

    spec = BatchingSpec(max_batch_size=8, max_delay_ms=0, run_on_loop=True)
    async with Batcher(run, spec, name="inline") as batcher:
        requests = [_request(i, rows=1 + i % 3, seed=i) for i in range(12)]
        results = await asyncio.gather(*(batcher.infer(r) for r in requests))
    for request, result in zip(requests, results, strict=True):
        expected = _alone(session, request)
        assert result.keys() == expected.keys()
        for name in expected:
            np.testing.assert_array_equal(result[name], expected[name])
    assert set(threads) == {threading.get_ident()}
    assert len(threads) < len(requests)  # requests queued during a run shared a batch


# -- screening: a check of whole batches on the worker, narrowed to the bad request -------


def _screen_negative_ids(inputs: Tensors) -> None:
    """A screen refusing negative ids, naming the row within what it was given."""
    bad = np.flatnonzero(inputs["id"] < 0)
    if bad.size:
        raise NonFiniteError("id", f"input 'id' is negative (first at row {int(bad[0])})")


async def test_one_bad_request_in_a_gathered_batch_gets_its_own_error() -> None:
    runner = GateRunner(blocked=False)
    screened: list[list[int]] = []

    def screen(inputs: Tensors) -> None:
        screened.append([int(v) for v in inputs["id"]])
        _screen_negative_ids(inputs)

    spec = BatchingSpec(max_batch_size=16, max_delay_ms=50)
    async with Batcher(runner, spec, name="lin:1", screen=screen) as batcher:
        requests = [_ids(1, 1), _ids(2), _ids(3, -3, 3), _ids(4), _ids(5, 5)]
        outcomes = await asyncio.gather(
            *(batcher.infer(r) for r in requests), return_exceptions=True
        )
        stats = batcher.stats
    bad = outcomes[2]
    assert isinstance(bad, NonFiniteError)
    assert str(bad) == "input 'id' is negative (first at row 1)"  # row within its request
    assert bad.input_name == "id"
    for request, got in zip(requests, outcomes, strict=True):
        if request is not requests[2]:
            assert isinstance(got, dict)
            assert list(got["double"]) == [2 * int(v) for v in request["id"]]
            assert int(got["total"]) == 1 + 1 + 2 + 4 + 5 + 5  # the batch it ran in
    # One check of the whole batch, one per request to single out the bad one, then the
    # others run together.
    assert screened[0] == [1, 1, 2, 3, -3, 3, 4, 5, 5]
    assert screened[1:] == [[1, 1], [2], [3, -3, 3], [4], [5, 5]]
    assert runner.batches == [[1, 1, 2, 4, 5, 5]]
    assert stats.refused == 1 and stats.failed == 0
    assert stats.batches == 1 and stats.rows == 6


async def test_screen_refusing_every_request_runs_nothing() -> None:
    runner = GateRunner(blocked=False)
    spec = BatchingSpec(max_batch_size=8, max_delay_ms=50)
    async with Batcher(runner, spec, name="lin:1", screen=_screen_negative_ids) as batcher:
        outcomes = await asyncio.gather(
            batcher.infer(_ids(-1)), batcher.infer(_ids(2, -2)), return_exceptions=True
        )
        assert [str(e) for e in outcomes] == [
            "input 'id' is negative (first at row 0)",
            "input 'id' is negative (first at row 1)",
        ]
        assert all(isinstance(e, NonFiniteError) for e in outcomes)
        assert outcomes[0] is not outcomes[1]
        # The batcher keeps serving.
        assert list((await batcher.infer(_ids(7)))["double"]) == [14]
    assert runner.batches == [[7]]
    assert batcher.stats.refused == 2 and batcher.stats.batches == 1


async def test_screen_of_a_lone_request_and_a_failing_screen() -> None:
    spec = BatchingSpec(max_batch_size=8, max_delay_ms=0)
    async with Batcher(
        GateRunner(blocked=False), spec, name="lin:1", screen=_screen_negative_ids
    ) as batcher:
        with pytest.raises(NonFiniteError, match=r"first at row 2\)$"):
            await batcher.infer(_ids(0, 1, -1))
        assert list((await batcher.infer(_ids(3)))["double"]) == [6]

    def broken(inputs: Tensors) -> None:
        raise RuntimeError("screen bug")

    async with Batcher(GateRunner(blocked=False), spec, name="lin:1", screen=broken) as batcher:
        with pytest.raises(ExecutionError) as err:
            await batcher.infer(_ids(1))
    # Not an input error: a server-side failure of the batch, as a runner's would be.
    assert str(err.value) == "model lin:1 failed on a batch of 1 rows: RuntimeError('screen bug')"


async def test_single_row_requests_get_row_views_of_the_batch(
    session: ort.InferenceSession,
) -> None:
    spec = BatchingSpec(max_batch_size=16, max_delay_ms=50)
    runner = OnnxRunner(session)
    async with Batcher(runner, spec, name="lin:1") as batcher:
        requests = [_request(i, 1, seed=3) for i in range(10)]
        results = await asyncio.gather(*(batcher.infer(r) for r in requests))
    assert len(runner.batches) == 1
    for request, result in zip(requests, results, strict=True):
        expected = _alone(session, request)
        assert result["y"].shape == (1, 3) and result["ids"].shape == (1,)
        for name in expected:
            np.testing.assert_array_equal(result[name], expected[name])


async def test_single_output_single_row_requests_are_split_into_row_views() -> None:
    def run(inputs: Tensors) -> Tensors:
        return {"pairs": np.stack([inputs["id"], -inputs["id"]], axis=1)}

    spec = BatchingSpec(max_batch_size=16, max_delay_ms=50)
    async with Batcher(run, spec, name="pairs") as batcher:
        results = await asyncio.gather(*(batcher.infer(_ids(i)) for i in range(12)))
        assert batcher.stats.batches == 1
    for i, got in enumerate(results):
        assert got.keys() == {"pairs"}
        np.testing.assert_array_equal(got["pairs"], [[i, -i]])
        assert got["pairs"].base is not None  # a view of the batch's output, not a copy
