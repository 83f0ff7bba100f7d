"""Scoring one chunk in a worker: good rows scored, bad rows kept as errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from shared.batch.reading import ChunkRows
from shared.batch.scoring import score_chunk
from shared.pipeline.model import Model
from shared.pipeline.package import load_package


def _fraud(example_models: Path) -> Model:
    return Model.load(load_package(example_models / "fraud" / "1"))


def test_a_chunk_without_good_rows_gives_an_empty_table_with_every_output_column(
    example_models: Path,
) -> None:
    model = _fraud(example_models)
    chunk = ChunkRows(
        rows=2,
        index=np.zeros(0, dtype=np.int64),
        inputs={"x": np.zeros((0, 8), dtype=np.float32)},
        ids=pa.table({"txn": pa.array([], type=pa.string())}),
        errors=[(0, "column 'amount': 'abc' is not a number"), (1, "2 fields, expected 8")],
    )
    scored = score_chunk(model, chunk)
    assert scored.table.num_rows == 0
    assert scored.table.column_names == [
        "row", "txn", "label", "probabilities_0", "probabilities_1", "risk",
    ]  # fmt: skip
    assert scored.errors == [
        (0, "column 'amount': 'abc' is not a number"),
        (1, "2 fields, expected 8"),
    ]


def test_a_chunk_with_a_bad_row_keeps_the_others_in_order(example_models: Path) -> None:
    model = _fraud(example_models)
    x = np.array(
        [[5000, 3, 0.95, 400, 1, 25, 20, 0], [np.nan] * 8, [12, 14, 0.1, 2, 0, 1, 30, 1]],
        dtype=np.float32,
    )
    chunk = ChunkRows(
        rows=3, index=np.arange(3), inputs={"x": x}, ids=pa.table({"txn": ["a", "b", "c"]})
    )
    scored = score_chunk(model, chunk)
    assert scored.table["row"].to_pylist() == [0, 2]
    assert scored.table["txn"].to_pylist() == ["a", "c"]
    expected = model.predict({"x": x[[0, 2]]})
    assert scored.table["risk"].to_pylist() == [str(v) for v in expected["risk"]]
    assert [row for row, _ in scored.errors] == [1]
    assert "NaN" in scored.errors[0][1] or "non-finite" in scored.errors[0][1]
