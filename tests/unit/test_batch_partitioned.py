"""Model-name templates and partitioned chunk scoring on real tiny ONNX packages (an eager
data plane over a models folder; the model-store plane is covered by
tests/integration/test_batch_many_models.py)."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest

from shared.batch.mapping import bind_inputs
from shared.batch.modeltemplate import ModelTemplate
from shared.batch.partitioned import plan_template, score_partitioned
from shared.batch.reading import read_csv_chunk
from shared.batch.retry import Action, action_for
from shared.errors import BatchInputError, NotReadyError
from shared.localhost.ports import free_ports
from shared.modelstore.blobstore import ModelStoreClient
from shared.modelstore.plane import StoreDataPlane, StoreOptions
from shared.modelstore.policy import parse_model_rules
from shared.serving.dataplane import DataPlane
from tests.integration.test_batch_many_models import store_graph, store_package


def test_template_parsing() -> None:
    assert ModelTemplate.parse("fraud") is None
    assert ModelTemplate.parse(None) is None
    t = ModelTemplate.parse("sales-{store_id}")
    assert t == ModelTemplate("sales-{store_id}", "store_id", None)
    assert (t.pattern, t.name("7"), t.recorded_version) == ("sales-*", "sales-7", "latest")
    assert ModelTemplate.parse("sales-{store_id}:2") == ModelTemplate(
        "sales-{store_id}", "store_id", "2"
    )
    assert ModelTemplate.parse("{region}-demand", "3") == ModelTemplate(
        "{region}-demand", "region", "3"
    )
    usage = "expected one placeholder naming the partition column, e.g. 'sales-{store_id}'"
    for bad, why in {
        "a-{x}-{y}": f"model template 'a-{{x}}-{{y}}': {usage}",
        "a-{x": f"model template 'a-{{x': {usage}",
        "a-x}": f"model template 'a-x}}': {usage}",
        "a-{ x}": "model template 'a-{ x}': { x} is not a column name (letters, digits, '_', "
        f"'.', '-'); {usage}",
        "a-{x/y}": "model template 'a-{x/y}': {x/y} is not a column name (letters, digits, "
        f"'_', '.', '-'); {usage}",
    }.items():
        with pytest.raises(BatchInputError) as info:
            ModelTemplate.parse(bad)
        assert str(info.value) == why


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlane]:
    root = tmp_path_factory.mktemp("models")
    store_package(root, "sales-1", 1)
    store_package(root, "sales-2", 2)
    store_package(
        root,
        "sales-odd",
        9,
        inputs="{name: x, datatype: FP32, shape: [-1, 4], columns: [a, b, c, d]}",
    )
    broken = store_package(root, "sales-broken", 8)  # declares 8 features, the graph takes 4
    (broken / "model.yaml").write_text(
        (broken / "model.yaml")
        .read_text()
        .replace("shape: [-1, 4], columns: [f0, f1, f2, f3]", "shape: [-1, 8]")
    )
    p = DataPlane(root, "sales-1,sales-2,sales-odd,sales-broken", batching=False)
    p.start_loading()
    assert p.wait_loaded(60)
    yield p


HEADER = b"id,store_id,f0,f1,f2,f3\n"


def test_rows_scored_by_their_own_model_in_order(plane: DataPlane) -> None:
    template = ModelTemplate("sales-{store_id}", "store_id")
    reference = plan_template(template, plane, wait_s=30)
    assert (reference.name, reference.version) == ("sales-1", "1")
    rng = np.random.default_rng(0)
    stores = ["1", "2", "2", "", "5", "1", "odd", " 2 ", "1", "broken"]
    x = rng.uniform(-2, 2, (len(stores), 4)).astype(np.float32)
    lines = [f"r{i},{s}," + ",".join(str(float(v)) for v in x[i]) for i, s in enumerate(stores)]
    body = ("\n".join(lines) + "\n").encode()
    chunk = read_csv_chunk(HEADER, body, bind_inputs(reference), ["id", "store_id"])
    scored = score_partitioned(chunk, template, reference, plane, wait_s=30)

    assert scored.table.column_names == ["row", "id", "store_id", "demand", "margin"]
    assert scored.table["row"].to_pylist() == [0, 1, 2, 5, 7, 8]
    assert scored.errors[0] == (3, "partition column 'store_id' is empty")
    assert scored.errors[1] == (4, "model 'sales-5' not found in this deployment")
    assert scored.errors[2][0] == 6
    assert scored.errors[2][1].startswith(
        "model 'sales-odd' version '1' has a signature other than the job's reference model "
        "sales-1:1 (inputs x FP32 [-1, 4] columns a, b, c, d;"
    )
    assert scored.errors[3][0] == 9
    assert scored.errors[3][1].startswith("model 'sales-broken' version '1': failed to load: ")
    assert len(scored.errors) == 4
    for row, demand, margin in zip(
        scored.table["row"].to_pylist(),
        scored.table["demand"].to_pylist(),
        scored.table["margin"].to_pylist(),
        strict=True,
    ):
        session = ort.InferenceSession(
            store_graph(int(stores[row])), providers=["CPUExecutionProvider"]
        )
        (y,) = session.run(None, {"x": x[row : row + 1]})
        np.testing.assert_allclose([demand, margin], y[0], rtol=1e-6)


def test_a_chunk_of_error_rows_has_the_scored_columns(plane: DataPlane) -> None:
    template = ModelTemplate("sales-{store_id}", "store_id")
    reference = plan_template(template, plane, wait_s=30)
    bindings = bind_inputs(reference)
    good = read_csv_chunk(HEADER, b"a,1,1,2,3,4\n", bindings, ["id", "store_id"])
    bad = read_csv_chunk(HEADER, b"a,8,1,2,3,4\nb,,1,2,3,4\n", bindings, ["id", "store_id"])
    scored = score_partitioned(good, template, reference, plane, wait_s=30)
    empty = score_partitioned(bad, template, reference, plane, wait_s=30)
    assert empty.table.num_rows == 0
    assert empty.table.schema == scored.table.schema
    assert empty.errors == [
        (0, "model 'sales-8' not found in this deployment"),
        (1, "partition column 'store_id' is empty"),
    ]


def test_no_matching_model_is_refused(plane: DataPlane) -> None:
    with pytest.raises(BatchInputError) as info:
        plan_template(ModelTemplate("demand-{region}", "region"), plane, wait_s=30)
    assert str(info.value) == (
        "model template 'demand-{region}': no model of this deployment matches 'demand-*'"
    )


def test_an_unreachable_store_retries_the_chunk(
    plane: DataPlane, tmp_path_factory: pytest.TempPathFactory
) -> None:
    (port,) = free_ports(1)  # nothing listens there: connections are refused
    dead = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
        f"{base64.b64encode(b'k' * 32).decode()};"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    store = StoreDataPlane(
        ModelStoreClient.from_setting(dead, "models", timeout_s=1),
        parse_model_rules("*"),
        StoreOptions(cache_dir=tmp_path_factory.mktemp("cache")),
    )
    try:
        assert store.wait_loaded(30)
        reference = plan_template(ModelTemplate("sales-{store_id}", "store_id"), plane, wait_s=30)
        chunk = read_csv_chunk(HEADER, b"a,1,1,2,3,4\n", bind_inputs(reference), ["id", "store_id"])
        template = ModelTemplate("sales-{store_id}", "store_id")
        with pytest.raises(NotReadyError) as info:
            score_partitioned(chunk, template, reference, store, wait_s=5)
        assert "cannot be reached" in str(info.value)
        assert action_for(info.value, 1, 5) is Action.RETRY
    finally:
        store.stop()
