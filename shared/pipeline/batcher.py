"""Dynamic batching: gather concurrent requests into one ``run`` call, off the event loop.

A ``Batcher`` sits between many concurrent ``infer`` calls and one synchronous runner
(``Model.run``). Requests wait in a queue; the gather loop (one asyncio task) sends the
oldest compatible ones as a single batch to one worker thread, and hands each caller
exactly its own rows of every output.

How a batch is formed
    Requests are grouped by *signature*: input names, dtypes and trailing shapes (all
    but the rows dimension). Only requests of one group are concatenated; requests of
    another group wait for their own batch instead of failing. A batch is sent when the
    worker is free and either its group holds ``max_batch_size`` rows (or the next
    request would not fit) or its oldest request has waited ``max_delay_ms``. Requests
    are taken in arrival order and a batch never exceeds ``max_batch_size`` rows, except
    that a single request larger than that runs alone, whole.

Pipelining
    At most one batch runs at a time (onnxruntime parallelises inside a run). While it
    runs, new requests keep queueing, so the next batch is complete by the time the
    worker is free and is sent at once; under load batches grow to match the run time.

Giving up
    A caller whose ``infer`` task is cancelled, or whose ``timeout`` elapses
    (``DeadlineExceededError``), leaves the queue at once: its rows are not counted
    against ``max_queue_rows`` and never reach the runner. The worker re-checks just
    before running, so a request that gives up between dispatch and the run start is
    dropped too. A caller that gives up while its batch runs gets its error; the batch
    still completes for the others.

Screening
    An optional ``screen`` (a check that raises ``InputError``, such as the NaN/inf check
    ``Model.batcher`` installs) runs on the worker once on each batch's concatenated
    inputs, instead of once per request on the event loop. When it refuses a batch, it is
    run again on each request of the batch: the requests it refuses fail with their own
    error (its message counts rows within the request) and the others run as one batch.

Errors
    ``OverloadedError`` when admitting a request would exceed ``max_queue_rows`` (a
    request is always admitted into an empty queue, so no size is refused forever);
    ``ExecutionError`` (chained) for every request of a batch whose run raised;
    ``NotReadyError`` for requests arriving after ``close()``, or queued when the batcher
    was stopped without draining.

Outputs
    An output whose first dimension equals the batch's rows is split by row offsets into
    views (no copies; a view keeps the batch buffer alive while it is held). Any other
    output (a scalar, a per-batch summary) cannot be attributed to rows: every caller of
    the batch gets the whole array, as a read-only view so one caller cannot change
    another's result. A request that ran alone gets the runner's outputs as they are.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeAlias

import numpy as np

from shared.errors import (
    DeadlineExceededError,
    EmptyBatchError,
    ExecutionError,
    InputError,
    NotReadyError,
    OverloadedError,
    ScorefnError,
    ShapeError,
)
from shared.pipeline.spec import BatchingSpec
from shared.pipeline.validate import Validated
from shared.telemetry.state import TELEMETRY

__all__ = ["Batcher", "BatcherStats", "InlineExecutor", "Runner", "Tensors"]

Tensors: TypeAlias = dict[str, np.ndarray]
#: A synchronous runner: validated inputs (first dimension = rows) to outputs. The
#: batcher never calls it concurrently, and never on the event loop's thread.
Runner: TypeAlias = Callable[[Tensors], Tensors]

#: Input name, dtype, trailing shape of each input, sorted by name: requests with equal
#: signatures can be concatenated along rows.
_Signature: TypeAlias = tuple[tuple[str, np.dtype[Any], tuple[int, ...]], ...]

_RECENT = 256  # batches kept in the stats' recent-history deques
_RATE_WEIGHT = 0.2  # weight of the newest batch in the rows/s moving average


# Request states. Plain ints, not an Enum: they are read several times per request on
# the hot path, and an Enum member lookup costs about 6x a global int.
_QUEUED = 0
_RUNNING = 1
_GONE = 2  # the caller gave up while queued


class _Request:
    """One ``infer`` call: its inputs, its row count and the future its caller awaits."""

    __slots__ = ("enqueued", "future", "group", "inputs", "rows", "state")

    def __init__(
        self,
        inputs: Tensors,
        rows: int,
        future: asyncio.Future[Tensors],
        enqueued: float,
        group: _Group,
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.future = future
        self.enqueued = enqueued
        self.group = group
        self.state = _QUEUED


class _Group:
    """Queued requests of one signature, oldest first. Requests that gave up are left in
    the deque (removing from the middle is O(n)) and skipped when met; ``rows`` counts
    only live ones."""

    __slots__ = ("queue", "rows")

    def __init__(self) -> None:
        self.queue: deque[_Request] = deque()
        self.rows = 0

    def head(self) -> _Request | None:
        q = self.queue
        while q:
            r = q[0]
            if r.state is _QUEUED:
                return r
            q.popleft()
        return None


@dataclass
class BatcherStats:
    """Counters for telemetry; all updated on the event loop, cheap to read at any time.

    Totals only grow; ``recent_*`` hold the last 256 batches, for histograms.
    """

    requests: int = 0
    """Requests admitted to the queue."""
    rejected: int = 0
    """Requests refused with ``OverloadedError``."""
    cancelled: int = 0
    """Requests whose caller was cancelled (queued or running)."""
    expired: int = 0
    """Requests whose timeout elapsed (queued or running)."""
    failed: int = 0
    """Requests failed with ``ExecutionError`` because their batch's run raised."""
    refused: int = 0
    """Requests failed with their ``InputError`` by the batch screen (NaN/inf...)."""
    batches: int = 0
    """Runner calls made (successful or not)."""
    rows: int = 0
    """Rows sent to the runner."""
    run_seconds: float = 0.0
    """Time spent inside the runner."""
    queue_wait_seconds: float = 0.0
    """Sum over run requests of the time from ``infer`` to dispatch."""
    rows_per_second: float = 0.0
    """Moving average of runner throughput (rows / run time); 0 before the first batch."""
    recent_batch_rows: deque[int] = field(default_factory=lambda: deque(maxlen=_RECENT))
    """Rows of each recent batch."""
    recent_queue_wait: deque[float] = field(default_factory=lambda: deque(maxlen=_RECENT))
    """Seconds the oldest request of each recent batch waited before it was sent to the
    worker (one entry per batch sent, even if all its callers then gave up)."""
    recent_run_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=_RECENT))
    """Runner seconds of each recent batch."""


class _Outcome:
    """What the worker thread hands back: the requests it ran and their outputs, or the
    exception the runner raised."""

    __slots__ = ("error", "outputs", "ran", "refused", "rows", "seconds")

    def __init__(
        self,
        ran: list[_Request],
        rows: int,
        outputs: list[Tensors] | None,
        error: BaseException | None,
        seconds: float,
        refused: list[tuple[_Request, InputError]] | None = None,
    ) -> None:
        self.ran = ran
        self.rows = rows
        self.outputs = outputs
        self.error = error
        self.seconds = seconds
        self.refused = refused


def _signature(inputs: Tensors) -> tuple[int, _Signature]:
    """Rows and signature of one request; refuses inputs that disagree on rows."""
    rows = -1
    first = ""
    parts: list[tuple[str, np.dtype[Any], tuple[int, ...]]] = []
    for name, arr in inputs.items():
        shape = arr.shape
        if not shape:
            raise ShapeError(
                name, f"input '{name}' is a scalar; batching needs a first (rows) dimension"
            )
        if rows < 0:
            rows, first = shape[0], name
        elif shape[0] != rows:
            raise ShapeError(
                name,
                f"input '{name}' has {shape[0]} rows but input '{first}' has {rows}; "
                "all inputs of one request must have the same number of rows",
            )
        parts.append((name, arr.dtype, shape[1:]))
    if rows < 0:
        raise ValueError("a request needs at least one input")
    if rows == 0:
        raise EmptyBatchError(first, f"input '{first}' has 0 rows; at least 1 is required")
    if len(parts) > 1:
        parts.sort(key=lambda p: p[0])
    return rows, tuple(parts)


def _split(outputs: Tensors, ran: list[_Request], rows: int) -> list[Tensors]:
    """Each request's rows of every output, as views, in the order of ``ran``."""
    n = len(ran)
    if n == 1:
        return [outputs]
    if n == rows and len(outputs) == 1:
        # One row per request (the common case under load) and one output: iterating a
        # (rows, 1, ...) view yields the per-request views in C, not one slice each.
        ((name, arr),) = outputs.items()
        if arr.ndim >= 1 and arr.shape[0] == rows:
            return [{name: v} for v in arr.reshape((rows, 1, *arr.shape[1:]))]
    per: list[Tensors] = [{} for _ in ran]
    for name, arr in outputs.items():
        if arr.ndim >= 1 and arr.shape[0] == rows:
            offset = 0
            for out, r in zip(per, ran, strict=True):
                end = offset + r.rows
                out[name] = arr[offset:end]
                offset = end
        else:
            # Not row-aligned, so not divisible: everyone gets all of it, read-only.
            shared = arr.view()
            shared.flags.writeable = False
            for out in per:
                out[name] = shared
    return per


def _concatenate(ran: list[_Request]) -> Tensors:
    """The batch's inputs: the request's own when it is alone, else concatenated rows."""
    if len(ran) == 1:
        return ran[0].inputs
    if not ran:
        return {}
    return {name: np.concatenate([r.inputs[name] for r in ran]) for name in ran[0].inputs}


class InlineExecutor(concurrent.futures.Executor):
    """Runs each call at once on the calling thread (the event loop's).

    For models whose whole run takes microseconds, handing the batch to a worker thread
    costs more than running it (``BatchingSpec.run_on_loop``); the loop is blocked only
    for the run itself.
    """

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


#: Seconds by which a batch may be sent before its delay has fully passed (one tick of a
#: millisecond-resolution loop clock).
_CLOCK_SLACK = 0.001


class Batcher:
    """Gathers concurrent ``infer`` calls into batched runs of ``run`` on a worker thread.

    Use on one event loop::

        batcher = Batcher(model.run, spec.batching, name=model.key)
        await batcher.start()
        outputs = await batcher.infer({"x": rows}, timeout=2.0)
        await batcher.close()

    or ``async with Batcher(...) as batcher:``. ``executor`` defaults to a dedicated
    single-thread pool owned (and shut down) by the batcher; a given executor is only
    borrowed. One batch runs at a time either way. ``screen``, if given, checks each
    batch's inputs on the worker (see *Screening* above).
    """

    def __init__(
        self,
        run: Runner,
        batching: BatchingSpec,
        *,
        name: str,
        executor: concurrent.futures.Executor | None = None,
        screen: Callable[[Tensors], None] | None = None,
    ) -> None:
        self.name = name
        self.batching = batching
        self._run = run
        self._screen = screen
        self._executor = executor
        self._owns_executor = executor is None
        self._max_rows = batching.max_batch_size if batching.enabled else 1
        self._delay = batching.max_delay_ms / 1000.0 if batching.enabled else 0.0
        self._groups: dict[_Signature, _Group] = {}
        self._queued_rows = 0
        self._stats = BatcherStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        # Set while the gather loop sleeps and may be woken by a new request.
        self._wakeup: asyncio.Future[None] | None = None
        self._closing = False

    # -- public -----------------------------------------------------------------------

    @property
    def queued_rows(self) -> int:
        """Rows waiting in the queue (not counting the batch that is running)."""
        return self._queued_rows

    @property
    def stats(self) -> BatcherStats:
        """Live counters; read them, do not modify them."""
        return self._stats

    async def start(self) -> None:
        """Start the gather loop on the running event loop. Calling it again is a no-op."""
        if self._task is not None:
            return
        if self._closing:
            raise RuntimeError(f"batcher for model {self.name} is closed; create a new one")
        self._loop = asyncio.get_running_loop()
        if self._executor is None:
            if self.batching.run_on_loop:
                self._executor = InlineExecutor()
            else:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"batcher-{self.name}"
                )
        self._task = self._loop.create_task(self._gather(), name=f"batcher-{self.name}")

    async def infer(self, inputs: Tensors, *, timeout: float | None = None) -> Tensors:
        """Run ``inputs`` (first dimension = rows) as part of a batch; return its outputs.

        Raises ``OverloadedError`` at once when the queue is full, ``DeadlineExceededError``
        when ``timeout`` seconds pass first, ``ExecutionError`` when the batch's run fails,
        ``NotReadyError`` after ``close()``. Cancelling the caller removes the request.
        """
        loop = self._loop
        if loop is None or self._closing:
            if loop is None and not self._closing:
                raise RuntimeError(f"batcher for model {self.name} is not started")
            raise NotReadyError(f"model {self.name} is shutting down", retry_after=1.0)
        if type(inputs) is Validated:  # the validator's fast path knows both already
            rows, signature = inputs.rows, inputs.signature
        else:
            rows, signature = _signature(inputs)
        queued = self._queued_rows
        limit = self.batching.max_queue_rows
        if queued and queued + rows > limit:
            self._stats.rejected += 1
            retry = self._retry_after()
            raise OverloadedError(
                f"model {self.name} is overloaded: {queued} rows are queued and this "
                f"request adds {rows}; the limit is {limit} queued rows. "
                f"Retry after {retry:g} s.",
                retry_after=retry,
            )

        group = self._groups.get(signature)
        if group is None:
            group = self._groups[signature] = _Group()
        future: asyncio.Future[Tensors] = loop.create_future()
        request = _Request(inputs, rows, future, loop.time(), group)
        group.queue.append(request)
        group.rows += rows
        self._queued_rows = queued + rows
        self._stats.requests += 1
        # Wake the gather loop only when it has something to do: the queue was empty, or
        # this group now fills a batch. Waking it per request would cost a task step each.
        if self._wakeup is not None and (queued == 0 or group.rows >= self._max_rows):
            self._wake()

        timer = (
            None if timeout is None else loop.call_later(timeout, self._expire, request, timeout)
        )
        try:
            return await future
        except asyncio.CancelledError:
            # Task.cancel() cancels the awaited future, so the gather loop already sees
            # the request as done and will not run it; release its queue rows now.
            if request.state is _QUEUED:
                self._leave_queue(request)
            self._stats.cancelled += 1
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def close(self, *, drain: bool = True) -> None:
        """Stop accepting requests; later ``infer`` calls raise ``NotReadyError``.

        With ``drain`` (the default) queued requests are still run, without waiting for
        ``max_delay_ms``; otherwise they fail with ``NotReadyError``. Either way the
        running batch completes. Cancelling ``close`` stops draining and fails what is
        left. An owned executor is shut down.
        """
        self._closing = True
        if not drain:
            self._fail_queued()
        self._wake()
        task = self._task
        try:
            if task is not None and not task.done():
                await task
        finally:
            if self._owns_executor and self._executor is not None:
                # Nothing is left to run (the loop ended), so do not block the event loop.
                self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Batcher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- queue bookkeeping ----------------------------------------------------------------

    def _leave_queue(self, request: _Request) -> None:
        request.state = _GONE
        request.group.rows -= request.rows
        self._queued_rows -= request.rows
        request.inputs = {}  # a dead entry may linger in its deque: free the arrays now

    def _expire(self, request: _Request, timeout: float) -> None:
        """Timer callback: fail a request that did not finish within its timeout."""
        if request.future.done():
            return
        if request.state is _QUEUED:
            where = "it was still queued"
            self._leave_queue(request)
        else:
            where = "its batch was running"
        self._stats.expired += 1
        request.future.set_exception(
            DeadlineExceededError(
                f"model {self.name} did not answer a request of {request.rows} rows "
                f"within {timeout:g} s; {where}"
            )
        )

    def _retry_after(self) -> float:
        """Seconds until the queue has likely drained, from the measured throughput."""
        rate = self._stats.rows_per_second
        if rate <= 0.0:
            return 1.0
        return round(min(60.0, max(0.001, self._queued_rows / rate)), 3)

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None:
            self._wakeup = None
            if not wakeup.done():
                wakeup.set_result(None)

    def _fail_queued(self) -> None:
        for group in self._groups.values():
            while (request := group.head()) is not None:
                self._leave_queue(request)
                request.future.set_exception(
                    NotReadyError(
                        f"model {self.name} shut down before this request ran", retry_after=1.0
                    )
                )
        self._groups.clear()

    # -- gather loop ----------------------------------------------------------------------

    def _take_batch(self, now: float) -> tuple[list[_Request] | None, float | None]:
        """The next batch to send now, or None and when the earliest one will be due."""
        best: _Group | None = None
        best_time = 0.0
        due: float | None = None
        empty: list[_Signature] = []
        for signature, group in self._groups.items():
            head = group.head()
            if head is None:
                empty.append(signature)
                continue
            ready_at = head.enqueued + self._delay
            # The loop clock may tick in whole milliseconds (uvloop), and the float sum
            # can land just past the tick: without the slack the timer fires, the batch
            # is "not ready" on the same cached time, and the loop spins for a tick.
            if self._closing or group.rows >= self._max_rows or ready_at <= now + _CLOCK_SLACK:
                if best is None or head.enqueued < best_time:
                    best, best_time = group, head.enqueued
            elif due is None or ready_at < due:
                due = ready_at
        for signature in empty:
            del self._groups[signature]
        if best is None:
            return None, due

        queue = best.queue
        first = queue.popleft()  # head() left a live request at the front
        batch = [first]
        rows = first.rows
        limit = self._max_rows
        while queue and rows < limit:
            request = queue[0]
            if request.state is not _QUEUED:
                queue.popleft()
                continue
            if rows + request.rows > limit:
                break  # keep arrival order: a big request is not overtaken by later ones
            queue.popleft()
            batch.append(request)
            rows += request.rows
        waited = 0.0
        for request in batch:
            request.state = _RUNNING
            waited += now - request.enqueued
        best.rows -= rows
        self._queued_rows -= rows
        self._stats.queue_wait_seconds += waited
        self._stats.recent_queue_wait.append(now - first.enqueued)
        if TELEMETRY.metrics is not None:  # off by default: one attribute read
            TELEMETRY.metrics.batch_sent(self.name, rows, now - first.enqueued)
        return batch, None

    async def _gather(self) -> None:
        """The gather loop: send batches while the worker is free, sleep otherwise."""
        loop = self._loop
        assert loop is not None
        try:
            while True:
                batch, due = self._take_batch(loop.time())
                if batch is not None:
                    await self._dispatch(batch)
                    continue
                if self._closing and not self._queued_rows:
                    return
                wakeup: asyncio.Future[None] = loop.create_future()
                self._wakeup = wakeup
                timer = None if due is None else loop.call_at(due, self._wake)
                try:
                    await wakeup
                finally:
                    self._wakeup = None
                    if timer is not None:
                        timer.cancel()
        finally:
            # Whatever ended the loop (close, cancellation, a bug), nobody may wait forever.
            self._closing = True
            self._fail_queued()

    async def _dispatch(self, batch: list[_Request]) -> None:
        """Run one batch on the worker; return once its callers' futures are settled."""
        loop = self._loop
        executor = self._executor
        assert loop is not None and executor is not None
        try:
            if isinstance(executor, InlineExecutor):
                # run_on_loop: the run happens here either way, and an executor round trip
                # (a self-pipe write and an extra loop iteration) costs more than a tiny model.
                self._settle(self._execute(batch))
                return
            # The worker settles the callers itself, in one loop callback (_finish), rather
            # than through run_in_executor's chained futures: one loop wakeup per batch,
            # and the callers run in the same iteration as this task's next step.
            settled: asyncio.Future[None] = loop.create_future()
            executor.submit(self._work, batch, settled)
            await settled
        except BaseException as exc:
            # The worker itself failed (executor shut down) or the loop was cancelled
            # while the batch ran: its callers must not hang.
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(
                        NotReadyError(f"model {self.name} shut down while this request ran")
                        if isinstance(exc, asyncio.CancelledError)
                        else ExecutionError(f"model {self.name} could not run a batch: {exc}")
                    )
            raise

    def _work(self, batch: list[_Request], settled: asyncio.Future[None]) -> None:
        """Worker thread: run the batch, then hand the outcome to the loop."""
        try:
            outcome = self._execute(batch)
        except BaseException as exc:  # _execute catches Exception; never leave it hanging
            outcome = _Outcome(batch, sum(r.rows for r in batch), None, exc, 0.0)
        loop = self._loop
        assert loop is not None
        # RuntimeError: the loop is closed; its callers were failed when it stopped.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._finish, outcome, settled)

    def _finish(self, outcome: _Outcome, settled: asyncio.Future[None]) -> None:
        """Loop callback: settle the batch's callers, then free the gather loop."""
        try:
            self._settle(outcome)
        finally:
            if not settled.done():
                settled.set_result(None)

    def _settle(self, outcome: _Outcome) -> None:
        """Give each caller of a batch its outputs or its error."""
        stats = self._stats
        if outcome.refused:
            for request, input_error in outcome.refused:
                if not request.future.done():
                    stats.refused += 1
                    request.future.set_exception(input_error)
        if outcome.ran:
            stats.batches += 1
            stats.rows += outcome.rows
            stats.run_seconds += outcome.seconds
            stats.recent_batch_rows.append(outcome.rows)
            stats.recent_run_seconds.append(outcome.seconds)
        if outcome.outputs is not None:
            if outcome.seconds > 0.0:
                rate = outcome.rows / outcome.seconds
                stats.rows_per_second = (
                    rate
                    if stats.rows_per_second == 0.0
                    else stats.rows_per_second + _RATE_WEIGHT * (rate - stats.rows_per_second)
                )
            for request, out in zip(outcome.ran, outcome.outputs, strict=True):
                future = request.future
                if not future.done():  # its caller may have given up during the run
                    future.set_result(out)
            return

        error = outcome.error
        assert error is not None
        if isinstance(error, ExecutionError):
            # Already our domain error, whose producer named the model: keep its message.
            message = f"{error} (batch of {outcome.rows} rows)"
        else:
            detail = str(error) if isinstance(error, ScorefnError) else repr(error)
            message = f"model {self.name} failed on a batch of {outcome.rows} rows: {detail}"
        for request in outcome.ran:
            if not request.future.done():
                stats.failed += 1
                # One exception object per caller: raising a shared one from several
                # tasks would splice their tracebacks together.
                failure = ExecutionError(message)
                failure.__cause__ = error
                request.future.set_exception(failure)

    def _execute(self, batch: list[_Request]) -> _Outcome:
        """Worker thread: concatenate, run, split. Never raises."""
        # Last check before spending the runner's time. Reading ``done()`` of a loop
        # future from this thread is a plain state read; at worst a caller who gives up
        # this very instant is run anyway, exactly as if it had given up mid-run.
        ran = [r for r in batch if not r.future.done()]
        refused: list[tuple[_Request, InputError]] | None = None
        rows = 0
        start = time.perf_counter()
        try:
            feeds = _concatenate(ran)
            if self._screen is not None and ran:
                try:
                    self._screen(feeds)
                except InputError:
                    # Single out the bad requests; the others still run, together.
                    refused = []
                    kept: list[_Request] = []
                    for r in ran:
                        try:
                            self._screen(r.inputs)
                            kept.append(r)
                        except InputError as exc:
                            refused.append((r, exc))
                    ran = kept
                    feeds = _concatenate(ran)
            if not ran:
                return _Outcome(ran, 0, [], None, 0.0, refused)
            for r in ran:
                rows += r.rows
            outputs = self._run(feeds)
            seconds = time.perf_counter() - start
            return _Outcome(ran, rows, _split(outputs, ran, rows), None, seconds, refused)
        except Exception as exc:
            if not rows:
                for r in ran:
                    rows += r.rows
            return _Outcome(ran, rows, None, exc, time.perf_counter() - start, refused)
