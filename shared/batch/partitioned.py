"""Batch jobs over many models: each row scored by the model its partition value names.

A job whose model option is a template (``sales-{store_id}``, ``shared.batch.modeltemplate``)
is planned against a *reference* model: the first served name the template matches
(``sales-*``). Its inputs decide which file columns are read and checked, and its
outputs the predictions' columns; the partition column is always copied to predictions.

A worker reads its chunk once, groups the good rows by partition value and scores each
group with its own model, leased through the deployment's data plane: on a model-store
deployment (``SCOREFN_MODEL_STORE``) a model not loaded is loaded on demand (single
flight, waiting for it) and released after its group, so a chunk naming more models than
the working set holds still finishes, within the set's bounds. Groups whose model is
loaded go first (the fewest loads); the next group's model loads while one is scored.

Rows never fail the chunk for their model: an empty partition value, a model the store
does not have, a package that fails to load, or a model whose signature differs from the
reference make error rows with the reason. Errors that are not about the rows (the store
cannot be reached, a model still loading after ``SCOREFN_BATCH_MODEL_WAIT_S``) propagate
and the chunk is retried, as for any chunk. Predictions keep chunk row order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shared.batch.ledger import JobRecord
from shared.batch.mapping import InputBinding, bind_inputs
from shared.batch.modeltemplate import LATEST, ModelTemplate
from shared.batch.reading import ChunkRows
from shared.batch.scoring import ROW_COLUMN, ScoredChunk, output_columns, score_chunk
from shared.errors import BatchInputError, NotFoundError, NotReadyError, PackageError
from shared.modelstore.plane import StoreDataPlane
from shared.pipeline.dtypes import to_numpy
from shared.pipeline.model import Model
from shared.pipeline.spec import PackageSpec, TensorSpec
from shared.serving.dataplane import DataPlane, ModelState

__all__ = [
    "ChunkScorer",
    "chunk_scorer",
    "plan_template",
    "planned_record",
    "score_partitioned",
    "REFERENCE_OPTION",
]

REFERENCE_OPTION = "reference_model"
"""Job option the planner records: ``name:version`` of the reference model."""


# ----------------------------------------------------------------------------- models
@contextlib.contextmanager
def _held(
    plane: DataPlane, name: str, version: str | None, *, wait_s: float, listed_after: float
) -> Iterator[Model]:
    """The loaded model ``name`` for the duration of the block (a lease on a store
    plane, so it is not evicted meanwhile)."""
    if isinstance(plane, StoreDataPlane):
        lease = plane.hold(name, version, timeout=wait_s, listed_after=listed_after)
        try:
            yield lease.model
        finally:
            lease.release()
    else:
        entry = plane.entry(name, version)
        if entry.state is ModelState.FAILED:  # for good: rows get its reason, not retries
            where = f"model '{entry.spec.name}' version '{entry.spec.version}'"
            raise PackageError(where, "", f"failed to load: {entry.error}")
        yield plane.model(name, version)


def _served_names(plane: DataPlane) -> list[str]:
    if isinstance(plane, StoreDataPlane):
        snap = plane.index.snapshot
        if snap is None:
            raise NotReadyError(plane.index.error or "the model store has not been listed yet")
        return sorted(snap.models)
    return sorted({e.spec.name for e in plane.entries()})


def _loaded_names(plane: DataPlane) -> set[str]:
    return {e.spec.name for e in plane.entries() if e.model is not None}


def _signature(spec: PackageSpec) -> tuple[object, ...]:
    """What must be equal for two models to fill the same predictions columns from the
    same file columns."""
    return (
        tuple(bind_inputs(spec)),
        tuple((o.name, o.datatype, tuple(o.shape[1:]), o.columns) for o in spec.outputs),
    )


# ----------------------------------------------------------------------------- planning
def plan_template(template: ModelTemplate, plane: DataPlane, *, wait_s: float) -> PackageSpec:
    """The reference model of a templated job: the first served name matching the
    template (its version as pinned, else its latest). ``BatchInputError`` when none."""
    plane.wait_loaded(wait_s)
    names = [n for n in _served_names(plane) if fnmatch.fnmatchcase(n, template.pattern)]
    if not names:
        raise BatchInputError(
            f"model template '{template.text}': no model of this deployment matches "
            f"'{template.pattern}'"
        )
    problems: list[str] = []
    for name in names:
        try:
            with _held(
                plane, name, template.version, wait_s=wait_s, listed_after=time.monotonic()
            ) as model:
                return model.spec
        except (NotFoundError, PackageError) as exc:  # no such version / broken: next one
            problems.append(str(exc))
    more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
    raise BatchInputError(
        f"model template '{template.text}': no model matching '{template.pattern}' can "
        f"serve as the reference: {'; '.join(problems[:3])}{more}"
    )


def planned_record(
    record: JobRecord, template: ModelTemplate, reference: PackageSpec, available: Sequence[str]
) -> JobRecord:
    """``record`` as planned for a templated job: model and version are the template's,
    the reference is recorded, and the partition column (which must be in the file) is
    copied to predictions."""
    if template.column not in available:
        raise BatchInputError(
            f"partition column '{template.column}' (model template '{template.text}') is not "
            f"in the file; it has {', '.join(available) or 'no columns'}"
        )
    ids = record.id_columns
    if template.column not in ids:
        ids = (template.column, *ids)
    options = {**record.options, REFERENCE_OPTION: f"{reference.name}:{reference.version}"}
    return dataclasses.replace(
        record,
        model=template.text,
        version=template.recorded_version,
        id_columns=ids,
        options=options,
    )


# ----------------------------------------------------------------------------- scoring
@dataclass(frozen=True)
class ChunkScorer:
    """How one chunk of a job is read (``bindings``) and scored (``score``)."""

    bindings: list[InputBinding]
    plane: DataPlane
    model: Model | None = None
    """The job's one model; None for a templated job."""
    template: ModelTemplate | None = None
    reference: PackageSpec | None = None
    wait_s: float = 300.0

    def score(self, chunk: ChunkRows) -> ScoredChunk:
        """Predictions and error rows of ``chunk``."""
        if self.model is not None:
            return score_chunk(self.model, chunk)
        assert self.template is not None and self.reference is not None
        return score_partitioned(
            chunk, self.template, self.reference, self.plane, wait_s=self.wait_s
        )


def chunk_scorer(job: JobRecord, plane: DataPlane, *, wait_s: float) -> ChunkScorer:
    """The scorer of ``job``'s chunks: its model, or its template and reference model."""
    plane.wait_loaded(wait_s)
    template = ModelTemplate.parse(job.model, None if job.version == LATEST else job.version)
    if template is None:
        model = plane.model(job.model, job.version)
        return ChunkScorer(bind_inputs(model.spec), plane, model=model)
    name, _, version = job.options.get(REFERENCE_OPTION, "").partition(":")
    if not name:
        raise BatchInputError(f"job {job.job}: templated job without a reference model")
    try:
        with _held(
            plane, name, version or None, wait_s=wait_s, listed_after=time.monotonic()
        ) as model:
            reference = model.spec
    except (NotFoundError, PackageError) as exc:
        raise BatchInputError(
            f"the reference model {name}:{version} of model template '{template.text}' "
            f"(chosen at planning) cannot be used: {exc}"
        ) from exc
    return ChunkScorer(
        bind_inputs(reference), plane, template=template, reference=reference, wait_s=wait_s
    )


def _partition_values(chunk: ChunkRows, column: str) -> pa.Array:
    values = chunk.ids[column].combine_chunks()
    if not pa.types.is_string(values.type):
        values = pc.cast(values, pa.string())
    return pc.utf8_trim_whitespace(pc.fill_null(values, ""))


def _sub_chunk(chunk: ChunkRows, positions: np.ndarray) -> ChunkRows:
    return ChunkRows(
        rows=len(positions),
        index=chunk.index[positions],
        inputs={name: array[positions] for name, array in chunk.inputs.items()},
        ids=chunk.ids.take(pa.array(positions, type=pa.int64())),
    )


def score_partitioned(
    chunk: ChunkRows,
    template: ModelTemplate,
    reference: PackageSpec,
    plane: DataPlane,
    *,
    wait_s: float,
) -> ScoredChunk:
    """Score each partition of ``chunk`` with its own model; predictions in row order."""
    started = time.monotonic()
    errors: dict[int, str] = dict(chunk.errors)
    signature = _signature(reference)
    encoded = pc.dictionary_encode(_partition_values(chunk, template.column))
    values: list[str] = encoded.dictionary.to_pylist()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    order = np.argsort(codes, kind="stable")  # each group's positions stay ascending
    ends = np.cumsum(np.bincount(codes, minlength=len(values))).tolist()
    starts = [0, *ends[:-1]]
    groups = {v: order[a:b] for v, a, b in zip(values, starts, ends, strict=True)}

    def fail(positions: np.ndarray, reason: str) -> None:
        for row in chunk.index[positions].tolist():
            errors[row] = reason

    if "" in groups:
        fail(groups.pop(""), f"partition column '{template.column}' is empty")
    loaded = _loaded_names(plane)
    todo = sorted(groups, key=lambda v: (template.name(v) not in loaded, v))
    tables: list[pa.Table] = []
    for i, value in enumerate(todo):
        name = template.name(value)
        positions = groups[value]
        try:
            with _held(plane, name, template.version, wait_s=wait_s, listed_after=started) as model:
                if i + 1 < len(todo):
                    _prefetch(plane, template.name(todo[i + 1]), template.version)
                if _signature(model.spec) != signature:
                    fail(positions, _mismatch(model.spec, reference))
                    continue
                scored = score_chunk(model, _sub_chunk(chunk, positions))
        except NotFoundError as exc:
            where = "the model store" if isinstance(plane, StoreDataPlane) else "this deployment"
            detail = "" if "version" not in str(exc) else f" ({exc})"
            fail(positions, f"model '{name}' not found in {where}{detail}")
            continue
        except PackageError as exc:
            fail(positions, str(exc))
            continue
        errors.update(scored.errors)
        tables.append(scored.table)
    if tables:
        table = pa.concat_tables(tables, promote_options="permissive")
        table = table.take(pc.sort_indices(table[ROW_COLUMN]))
    else:
        table = _empty_table(reference, chunk.ids.schema)
    return ScoredChunk(table, sorted(errors.items()))


def _prefetch(plane: DataPlane, name: str, version: str | None) -> None:
    """Start loading the next group's model while this one is scored (store planes)."""
    if isinstance(plane, StoreDataPlane):
        with contextlib.suppress(NotFoundError, NotReadyError, PackageError):
            plane.entry(name, version)


def _mismatch(spec: PackageSpec, reference: PackageSpec) -> str:
    def describe(s: PackageSpec) -> str:
        def one(t: TensorSpec) -> str:
            columns = f" columns {', '.join(t.columns)}" if t.columns else ""
            return f"{t.name} {t.datatype} {list(t.shape)}{columns}"

        return (
            f"inputs {', '.join(one(t) for t in s.inputs)}; "
            f"outputs {', '.join(one(t) for t in s.outputs)}"
        )

    return (
        f"model '{spec.name}' version '{spec.version}' has a signature other than the job's "
        f"reference model {reference.name}:{reference.version} ({describe(spec)}; the "
        f"reference has {describe(reference)})"
    )


def _empty_table(spec: PackageSpec, ids: pa.Schema) -> pa.Table:
    """Zero rows with the columns a scored table of ``spec`` has (a chunk of error rows)."""
    columns: dict[str, pa.Array] = {ROW_COLUMN: pa.array([], type=pa.int64())}
    for field in ids:
        columns[field.name] = pa.array([], type=field.type)
    for out in spec.outputs:
        dtype = to_numpy(out.datatype)
        kind = pa.string() if dtype.kind == "O" else pa.from_numpy_dtype(dtype)
        dims = [d if d > 0 else 1 for d in out.shape[1:]]
        width = int(np.prod(dims)) if dims else 0
        for name in output_columns(out, width):
            columns[name] = pa.array([], type=kind)
    return pa.table(columns)
