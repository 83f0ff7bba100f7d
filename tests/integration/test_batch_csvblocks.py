"""CSV predictions staged by workers as chunks' first rows become known, on Azurite.

The ledger places each done chunk exactly once (its first input row known when every
chunk before it is done), whatever the order and concurrency of the workers; the commit
uses the blocks workers staged, stages any chunk whose blocks are missing or partial, and
ignores blocks staged for a wrong first row.
"""

from __future__ import annotations

import io
import random
import threading
import uuid
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.batch import csvblocks
from shared.batch import ledger as ledger_module
from shared.batch.commit import commit_job
from shared.batch.ledger import JobLedger, JobRecord, bit_add
from shared.batch.naming import chunk_blob
from shared.batch.scoring import ROW_COLUMN
from shared.batch.staging import write_chunk
from shared.localhost.azurite import AzuriteProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ledger(azurite: AzuriteProcess) -> JobLedger:
    tables = TableServiceClient.from_connection_string(azurite.connection_string)
    return JobLedger(tables.get_table_client("csvblockjobs"))


@pytest.fixture(scope="module")
def containers(azurite: AzuriteProcess) -> Iterator[tuple[ContainerClient, ContainerClient]]:
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    staging = blobs.get_container_client("csvblocks-staging")
    output = blobs.get_container_client("csvblocks-output")
    for container in (staging, output):
        container.create_container()
    yield staging, output
    for container in (staging, output):
        container.delete_container()


def _job(ledger: JobLedger, chunks: int) -> JobRecord:
    record = JobRecord.new(
        endpoint="csvblocks",
        job=uuid.uuid4().hex,
        container="in",
        blob="csvblocks/t.csv",
        etag="0x1",
        url="http://127.0.0.1/in/csvblocks/t.csv",
        size=1,
        options={},
    )
    stored, created = ledger.create(
        JobRecord(**{**record.__dict__, "chunks": chunks, "state": "running", "format": "csv"})
    )
    assert created
    return stored


def test_chunks_are_placed_once_in_order_of_their_first_rows(ledger: JobLedger) -> None:
    job = _job(ledger, 5)
    rows = [10, 20, 30, 40, 50]

    def done(chunk: int) -> list[tuple[int, int]]:
        return ledger.mark_done(job.endpoint, job.job, chunk, rows[chunk])[1]

    assert done(2) == []  # chunks 0 and 1 are not done: its first row is unknown
    assert done(0) == [(0, 0)]
    assert done(1) == [(1, 10), (2, 30)]  # closing the gap places chunk 2 too
    assert done(2) == []  # a redelivered message places nothing again
    assert done(4) == []
    assert done(3) == [(3, 60), (4, 100)]
    stored = ledger.get(job.endpoint, job.job)
    assert stored is not None
    assert (stored.rows_known, stored.rows_before, stored.pending_rows) == (5, 150, {})
    assert stored.complete


def test_row_counts_are_kept_only_within_a_window_past_the_prefix(
    ledger: JobLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entity stays small: a chunk done too far ahead of the prefix is not recorded,
    so the prefix stops at it and the commit stages the chunks from there on."""
    monkeypatch.setattr(ledger_module, "_MAX_PENDING_ROWS", 3)
    job = _job(ledger, 8)

    def done(chunk: int) -> list[tuple[int, int]]:
        return ledger.mark_done(job.endpoint, job.job, chunk, 10)[1]

    assert done(5) == []  # 3 or more past the prefix (0): not recorded
    assert done(1) == [] and done(2) == []
    assert done(0) == [(0, 0), (1, 10), (2, 20)]
    assert done(3) == [(3, 30)] and done(4) == [(4, 40)]
    assert done(6) == [] and done(7) == []  # chunk 5 was never counted: the prefix waits
    stored = ledger.get(job.endpoint, job.job)
    assert stored is not None and stored.complete
    assert (stored.rows_known, stored.pending_rows) == (5, {6: 10, 7: 10})


def test_concurrent_workers_place_every_chunk_exactly_once(ledger: JobLedger) -> None:
    chunks = 24
    job = _job(ledger, chunks)
    rows = [random.Random(c).randint(1, 1000) for c in range(chunks)]
    order = list(range(chunks))
    random.Random(7).shuffle(order)
    placed: list[tuple[int, int]] = []
    lock = threading.Lock()

    def worker(mine: list[int]) -> None:
        for chunk in mine:
            _, got = ledger.mark_done(job.endpoint, job.job, chunk, rows[chunk])
            with lock:
                placed.extend(got)

    threads = [threading.Thread(target=worker, args=(order[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected_first = [int(x) for x in np.concatenate([[0], np.cumsum(rows)[:-1]])]
    assert sorted(placed) == list(enumerate(expected_first))


def _part(chunk: int, n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            ROW_COLUMN: pa.array(np.arange(n), pa.int64()),
            "txn_id": pa.array([f"t{chunk}-{i}" for i in range(n)], pa.string()),
            "label": pa.array(rng.integers(0, 2, n)),
            "score": pa.array(rng.random(n, dtype=np.float32)),
        }
    )


def test_commit_uses_staged_blocks_and_stages_what_is_missing(
    ledger: JobLedger,
    containers: tuple[ContainerClient, ContainerClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    staging, output = containers
    sizes = [300, 0, 250, 400, 320]
    job = _job(ledger, len(sizes))
    parts = [_part(c, n, seed=c) for c, n in enumerate(sizes)]
    for chunk, table in enumerate(parts):
        manifest = {
            "chunk": chunk,
            "rows": len(table),
            "predicted": len(table),
            "errors": 0,
            "seconds": 0.1,
        }
        write_chunk(staging, job.job, chunk, table, [], manifest)
    firsts = [int(x) for x in np.concatenate([[0], np.cumsum(sizes)[:-1]])]
    target = output.get_blob_client(f"{job.endpoint}/{job.job}/predictions.csv")
    monkeypatch.setattr(csvblocks, "BLOCK_BYTES", 4096)  # several blocks per chunk
    staged = {
        0: csvblocks.stage_chunk(target, parts[0], 0, firsts[0]),
        2: csvblocks.stage_chunk(target, parts[2], 2, firsts[2]),
    }
    assert len(staged[0]) > 1
    # chunk 3 staged for a first row that is not its own: never used
    wrong = csvblocks.stage_chunk(target, parts[3], 3, firsts[3] + 1)
    # chunk 4: a worker died after its first block: a partial run, not used
    text = csvblocks.csv_text(parts[4], 4, firsts[4])
    count = -(-len(text) // 4096)
    assert count > 1
    target.stage_block(csvblocks.block_id(4, firsts[4], 0, count), b"garbage\n")
    for chunk in staged:  # the commit can only use the staged blocks of these chunks
        staging.delete_blob(chunk_blob(job.job, chunk, "arrow"))
    runs = csvblocks.staged_runs(target)
    assert runs[(0, 0)] == staged[0] and runs[(2, firsts[2])] == staged[2]
    assert (4, firsts[4]) not in runs

    record = ledger.get(job.endpoint, job.job)
    assert record is not None
    for chunk in range(len(sizes)):
        record = JobRecord(**{**record.__dict__, "done": bit_add(record.done, chunk)})
    expected = io.BytesIO()
    everything = pa.concat_tables(
        [
            t.set_column(0, ROW_COLUMN, pa.array(np.arange(len(t)) + f, pa.int64()))
            for t, f in zip(parts, firsts, strict=True)
        ]
    )
    pacsv.write_csv(everything, expected)
    for _ in range(2):  # committing again (a redelivered message) writes the same blob
        result = commit_job(
            record,
            source=target,
            staging=staging,
            output=output,
            error_threshold=0.0,
            input_path="in/csvblocks/t.csv",
        )
        assert result.decision.status == "succeeded"
        assert target.download_blob().readall() == expected.getvalue()
    committed, _ = target.get_block_list("committed")
    ids = {b.id for b in committed}
    assert set(staged[0]) <= ids and set(staged[2]) <= ids
    assert wrong and not ids & set(wrong)
