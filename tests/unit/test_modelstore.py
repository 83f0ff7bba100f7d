"""Model store decisions: version policies, the bounded working set, the index."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import NotFoundError, NotReadyError
from shared.modelstore.blobstore import BlobFile, PackageListing
from shared.modelstore.index import StoreIndex
from shared.modelstore.policy import ModelRule, parse_model_rules, servable_versions
from shared.modelstore.workingset import Slot, WorkingSet
from shared.routing.access import access_for_path

# --------------------------------------------------------------------------- policy


def test_rules_parse_patterns_and_policies() -> None:
    assert parse_model_rules(" fraud:1|3, sales-*:all ,vision") == [
        ModelRule("fraud", "versions", ("1", "3")),
        ModelRule("sales-*", "all"),
        ModelRule("vision", "latest"),
    ]
    assert parse_model_rules("") == [ModelRule("*")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (":all", "model rule ':all' has no name pattern; expected pattern[:policy]"),
        (
            "fraud:1||2",
            "model rule 'fraud:1||2': policy '1||2' is not 'latest', 'all' or versions "
            "joined by '|' (e.g. 1|3)",
        ),
    ],
)
def test_bad_rules_name_the_rule(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_model_rules(text)
    assert str(info.value) == message


def test_first_matching_rule_decides_versions() -> None:
    rules = parse_model_rules("fraud:1|3,sales-*:all,sales-9:latest")
    available = {
        "fraud": ["1", "2", "3"],
        "sales-1": ["10", "9"],
        "sales-9": ["1", "2"],
        "other": ["1"],
    }
    assert servable_versions(rules, available) == {
        "fraud": ["1", "3"],
        "sales-1": ["9", "10"],
        "sales-9": ["1", "2"],  # sales-* matched first
    }


@given(st.lists(st.integers(0, 50).map(str), min_size=1, unique=True))
def test_latest_is_the_numeric_maximum(versions: list[str]) -> None:
    chosen = servable_versions([ModelRule("m")], {"m": versions})
    assert chosen == {"m": [str(max(int(v) for v in versions))]}


# --------------------------------------------------------------------------- working set


def _loaded(ws: WorkingSet[str, str], key: str, size: int = 1) -> Slot[str, str]:
    got = ws.acquire(key)
    assert got.start and got.future is not None
    return ws.complete(key, f"model-{key}", size)


def test_single_flight_one_load_for_many_waiters() -> None:
    ws: WorkingSet[str, str] = WorkingSet(max_items=2, max_bytes=100)
    first = ws.acquire("a")
    others = [ws.acquire("a") for _ in range(49)]
    assert first.start and not any(o.start for o in others)
    assert all(o.future is first.future for o in others)
    slot = ws.complete("a", "model-a", 10)
    assert slot.refs == 50
    assert first.future is not None and first.future.result() is slot
    for _ in range(50):
        ws.release(slot)
    assert ws.stats().loads == 1 and slot.refs == 0


def test_lru_evicts_idle_least_recently_used() -> None:
    evicted: list[str] = []
    ws: WorkingSet[str, str] = WorkingSet(
        max_items=2, max_bytes=100, on_evict=lambda s: evicted.append(s.key)
    )
    a = _loaded(ws, "a")
    b = _loaded(ws, "b")
    ws.release(a)
    ws.release(b)
    hit = ws.acquire("a")  # a is now most recently used
    assert hit.slot is a
    ws.release(a)
    c = _loaded(ws, "c")
    assert evicted == ["b"]
    assert ws.loaded_keys() == ["a", "c"]
    ws.release(c)


def test_eviction_never_drops_a_leased_model() -> None:
    evicted: list[str] = []
    ws: WorkingSet[str, str] = WorkingSet(
        max_items=1, max_bytes=100, on_evict=lambda s: evicted.append(s.key)
    )
    a = _loaded(ws, "a")  # leased by its request
    b = _loaded(ws, "b")
    assert evicted == [] and ws.stats().loaded == 2  # over the bound while a serves
    ws.release(a)
    assert evicted == ["a"]
    ws.release(b)
    assert ws.loaded_keys() == ["b"]


def test_memory_bound_counts_measured_sizes() -> None:
    ws: WorkingSet[str, str] = WorkingSet(max_items=10, max_bytes=100)
    for key in "abc":
        ws.release(_loaded(ws, key, size=40))
    stats = ws.stats()
    assert stats.loaded == 2 and stats.bytes == 80 and stats.evictions == 1
    assert ws.loaded_keys() == ["b", "c"]


def test_retired_model_goes_at_its_last_release() -> None:
    ws: WorkingSet[str, str] = WorkingSet(max_items=5, max_bytes=100)
    a = _loaded(ws, "a")
    assert ws.retire("a")
    assert ws.get("a") is None and ws.stats().loaded == 1  # still serving its request
    fresh = ws.acquire("a")  # a new request starts a new load, not the retired copy
    assert fresh.start
    ws.release(a)
    assert ws.stats().loaded == 0
    ws.fail("a", RuntimeError("gone"))
    assert fresh.future is not None and isinstance(fresh.future.exception(), RuntimeError)
    assert not ws.retire("a")


def test_concurrent_threads_share_one_load() -> None:
    ws: WorkingSet[str, str] = WorkingSet(max_items=3, max_bytes=100)
    starts = []
    barrier = threading.Barrier(16)

    def request() -> str:
        barrier.wait()
        got = ws.acquire("m")
        if got.start:
            starts.append(1)
            slot = ws.complete("m", "loaded", 1)
        else:
            slot = got.slot or got.future.result(5)  # type: ignore[union-attr]
        ws.release(slot)
        return slot.value

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: request(), range(16)))
    assert results == ["loaded"] * 16 and len(starts) == 1
    assert ws.stats().loads == 1


# --------------------------------------------------------------------------- index


def _listing(name: str, version: str, etag: str = "e1") -> PackageListing:
    return PackageListing(name, version, (BlobFile("model.yaml", 10, b"m" * 16, etag),))


class _Store:
    """The seam we own: what the index lists."""

    def __init__(self) -> None:
        self.packages = {("a", "1"): _listing("a", "1"), ("a", "2"): _listing("a", "2")}
        self.down = False

    def __call__(self) -> dict[tuple[str, str], PackageListing]:
        if self.down:
            raise NotReadyError("model store http://x cannot be reached", retry_after=5)
        return dict(self.packages)


def test_index_resolves_latest_and_names_what_is_served() -> None:
    store = _Store()
    index = StoreIndex(store, parse_model_rules("*"))
    with pytest.raises(NotReadyError, match="the model store has not been listed yet"):
        index.resolve("a", None)
    index.refresh()
    assert index.resolve("a", None).version == "2"
    with pytest.raises(NotFoundError) as info:
        index.resolve("b", None)
    assert str(info.value) == "model 'b' not found; this deployment serves a"
    with pytest.raises(NotFoundError) as info:
        index.resolve("a", "1")  # latest policy: version 1 is not served
    assert str(info.value) == "model 'a' has no version '1'; versions: 2"


def test_index_keeps_serving_known_models_when_the_store_is_down() -> None:
    store = _Store()
    index = StoreIndex(store, parse_model_rules("a:all"))
    index.refresh()
    store.down = True
    store.packages[("b", "1")] = _listing("b", "1")
    index.refresh()
    assert index.error == "model store http://x cannot be reached"
    assert index.resolve("a", "1").version == "1"  # known: still resolvable
    with pytest.raises(NotReadyError) as info:  # unknown: may exist, cannot tell -> 503
        index.resolve("b", None)
    assert info.value.retry_after == 5


def test_index_lists_in_full_only_when_the_blob_names_change() -> None:
    store = _Store()
    names = {"a/1/model.yaml", "a/2/model.yaml"}
    probes: list[int] = []

    def probe() -> frozenset[str]:
        if store.down:
            raise NotReadyError("model store http://x cannot be reached", retry_after=5)
        probes.append(1)
        return frozenset(names)

    clock = iter(float(t) for t in range(1000))
    index = StoreIndex(
        store, parse_model_rules("*"), prober=probe, full_every=4, clock=lambda: next(clock)
    )
    first = index.refresh()
    assert first is not None and index.full_listings == 1
    for _ in range(2):  # same names: the probe answers, the snapshot is confirmed
        snap = index.refresh()
        assert snap is not None and snap.models == first.models
    assert index.full_listings == 1 and len(probes) == 3
    assert snap.listed_at > first.listed_at  # fresh, as if listed again
    store.packages[("a", "3")] = _listing("a", "3")
    names.add("a/3/model.yaml")
    assert index.refresh() is not None and index.full_listings == 2  # names changed
    assert index.resolve("a", None).version == "3"
    for _ in range(3):
        index.refresh()
    assert index.full_listings == 2
    index.refresh()
    assert index.full_listings == 3  # every fourth refresh lists in full, whatever the names
    store.down = True
    index.refresh()
    assert index.error == "model store http://x cannot be reached"
    store.down = False
    index.refresh()  # after a failure: a full listing, not a probe alone
    assert (index.error, index.full_listings) == ("", 4)


def test_digest_changes_when_a_file_is_pushed_again() -> None:
    assert _listing("a", "1", "e1").digest != _listing("a", "1", "e2").digest
    assert _listing("a", "1", "e1").digest == _listing("a", "1", "e1").digest


# --------------------------------------------------------------------------- router rule


@pytest.mark.parametrize(
    ("path", "access"),
    [
        ("v2/repository/models/fraud/load", "admin"),
        ("v2/repository/models/fraud/unload", "admin"),
        ("v2/repository/models/fraud/unload/", "admin"),
        ("v2/repository/index", "invoke"),
        ("v2/models/load/infer", "invoke"),
        ("v2/models/fraud/infer", "invoke"),
        ("score", "invoke"),
    ],
)
def test_repository_load_and_unload_need_admin_through_the_router(path: str, access: str) -> None:
    assert access_for_path(path) == access


def test_reloaded_model_closes_the_retired_copy_after_its_last_request() -> None:
    evicted: list[Slot[str, str]] = []
    ws: WorkingSet[str, str] = WorkingSet(max_items=5, max_bytes=100, on_evict=evicted.append)
    old = _loaded(ws, "a")  # serving a request
    ws.retire("a")  # unloaded meanwhile
    new = _loaded(ws, "a")  # and loaded again
    assert evicted == [] and ws.get("a") is new
    ws.release(old)
    assert evicted == [old] and ws.get("a") is new
    ws.release(new)
    assert ws.stats().loaded == 1
