"""Pure decisions of batch scoring: chunk plans, job ids, names, retry and commit outcome."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.batch.formats import Format, format_for
from shared.batch.ledger import bit_add, bit_count, bit_set
from shared.batch.naming import job_id, parse_input_name
from shared.batch.outcome import Decision, decide
from shared.batch.planning import chunk_target, line_chunks, row_group_chunks
from shared.batch.retry import Action, action_for
from shared.errors import BatchInputError, ExecutionError, NotFoundError, NotReadyError


def _next_line_end(data: bytes):  # type: ignore[no-untyped-def]
    def find(pos: int) -> int:
        found = data.find(b"\n", pos)
        return len(data) if found < 0 else found + 1

    return find


@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=60),
    st.integers(1, 200),
    st.integers(0, 3),
)
def test_line_chunks_cover_the_body_at_line_ends(
    lines: list[bytes], target: int, header_lines: int
) -> None:
    data = b"".join(line + b"\n" for line in lines)
    start = sum(len(line) + 1 for line in lines[:header_lines])
    ranges = line_chunks(len(data), start, target, _next_line_end(data))
    if not ranges:
        assert start == len(data)
        return
    assert [a for a, _ in ranges] == [start, *(b for _, b in ranges[:-1])]
    assert (ranges[-1][1] if ranges else start) == len(data)
    assert all(data[b - 1 : b] == b"\n" for _, b in ranges)
    assert all(b > a for a, b in ranges)
    body_lines = [ln for a, b in ranges for ln in data[a:b].split(b"\n")[:-1]]
    assert body_lines == lines[header_lines:]


@given(st.lists(st.integers(0, 1000), max_size=50), st.integers(1, 3000))
def test_row_group_chunks_take_each_group_once_in_order(groups: list[int], target: int) -> None:
    chunks = row_group_chunks(groups, target)
    assert [g for c in chunks for g in range(c.first, c.first + c.count)] == list(
        range(len(groups))
    )
    assert sum(c.rows for c in chunks) == sum(groups)
    assert all(c.rows >= target for c in chunks[:-1])
    assert [c.first_row for c in chunks] == [sum(groups[: c.first]) for c in chunks]


@given(st.integers(0, 10**12), st.integers(1, 10**7), st.integers(1, 10**5))
def test_chunk_target_bounds_the_chunk_count(total: int, target: int, most: int) -> None:
    size = chunk_target(total, target, most)
    assert size >= target
    assert -(-total // size) <= most


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_job_id_is_stable_and_tracks_the_etag(name: str, etag: str) -> None:
    url = "http://127.0.0.1:10000/devstoreaccount1/batch-input/fraud/x.csv"
    assert job_id(url, etag) == job_id(url + "?sv=2024&sig=abc", f'"{etag}"')
    assert job_id(url, etag) != job_id(url, etag + "1")
    assert len(job_id(url, etag)) == 32


def test_input_names() -> None:
    parsed = parse_input_name("fraud/model=fraud:2/day1.csv")
    assert parsed is not None
    assert (parsed.endpoint, parsed.model, parsed.version) == ("fraud", "fraud", "2")
    plain = parse_input_name("fraud/in/day1.csv")
    assert plain is not None and (plain.model, plain.path) == (None, "in/day1.csv")
    assert parse_input_name("day1.csv") is None


def test_formats() -> None:
    assert format_for("a/b.CSV") is Format.CSV
    assert format_for("a/b.ndjson") is Format.JSONL
    with pytest.raises(BatchInputError) as err:
        format_for("fraud/README")
    assert str(err.value) == (
        "fraud/README: no extension is not a batch input format; "
        "allowed: .csv, .jsonl, .ndjson, .parquet"
    )


@given(st.sets(st.integers(0, 500)))
def test_bitmaps(bits: set[int]) -> None:
    text = ""
    for b in bits:
        text = bit_add(text, b)
    assert bit_count(text) == len(bits)
    assert all(bit_set(text, b) for b in bits)


@given(st.integers(1, 10), st.integers(1, 10))
def test_retry_table(attempt: int, most: int) -> None:
    last = attempt >= most
    assert action_for(BatchInputError("x"), attempt, most) is Action.FAIL_CHUNK
    assert action_for(NotFoundError("x"), attempt, most) is Action.FAIL_CHUNK
    for exc in (NotReadyError("x"), ExecutionError("x"), OSError("x")):
        assert action_for(exc, attempt, most) is (Action.DEAD_LETTER if last else Action.RETRY)


@given(st.integers(1, 10**6), st.data())
def test_decide(rows: int, data: st.DataObject) -> None:
    errors = data.draw(st.integers(0, rows))
    threshold = data.draw(st.sampled_from([-1.0, 0.0, 0.1, 1.0]))
    decision = decide(rows, errors, {}, threshold)
    assert (decision.status == "failed") == (threshold >= 0 and errors / rows > threshold)
    assert decide(rows, errors, {3: "boom"}, -1) == Decision("failed", "1 chunk(s) failed: 3")


def test_decide_reason() -> None:
    assert decide(10, 3, {}, 0.1) == Decision(
        "failed", "3 of 10 rows failed (30.0%), over error_threshold 10.0%"
    )
