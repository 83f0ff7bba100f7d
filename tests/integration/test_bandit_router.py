"""Bandit routing and the feedback API through real routers (two instances), stub
scoring deployments and Azurite."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shared.localhost.azurite import AzuriteProcess
from tests.integration.strategy_stack import StrategyStack

pytestmark = pytest.mark.integration
BODY = {"data": [[1, 2]]}


@pytest.fixture(scope="module")
def stack(azurite: AzuriteProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[StrategyStack, str, str]]:  # fmt: skip
    s = StrategyStack(azurite, tmp_path_factory.mktemp("bandit"))
    try:
        s.deployment("blue")
        s.deployment("green")
        s.apply("bandit", {"mode": "bandit", "blue": 50, "green": 50},  # type: ignore[dict-item]
                bandit={"warmup_requests": 20, "feedback_window_s": 60, "min_share": 0.05})  # fmt: skip
        s.apply("weights", {"blue": 100, "green": 0})
        yield s, s.router("one"), s.router("two")
    finally:
        s.close()


def _arms(client: httpx.Client, router: str) -> dict[str, dict[str, Any]]:
    body = client.get(f"{router}/api/endpoints/bandit").json()
    assert body["traffic_mode"] == "bandit"
    return body["bandit"]["arms"]  # type: ignore[no-any-return]


def test_feedback_moves_traffic_to_the_rewarded_deployment(
    stack: tuple[StrategyStack, str, str],
) -> None:
    _, one, two = stack
    url = f"{one}/api/endpoints/bandit"
    served: dict[str, str] = {}
    with httpx.Client(timeout=30) as client:
        for i in range(300):
            r = client.post(f"{url}/score", json=BODY, headers={"x-request-id": f"req-{i}"})
            assert r.status_code == 200, r.text
            served[f"req-{i}"] = r.headers["x-deployment"]
            # green earns, blue does not; feedback alternates between the two instances
            fb = client.post(f"{(one, two)[i % 2] if i < 250 else one}/api/endpoints/bandit/feedback",
                             json={"request_id": f"req-{i}",
                                   "reward": int(served[f"req-{i}"] == "green")})  # fmt: skip
            deadline = time.monotonic() + 10
            while fb.status_code == 404 and time.monotonic() < deadline:
                # instance two before instance one flushed (flush_s 0.5; longer on a
                # loaded machine): ask again until the id is in the ledger
                time.sleep(0.3)
                fb = client.post(f"{two}/api/endpoints/bandit/feedback",
                                 json={"request_id": f"req-{i}",
                                       "reward": int(served[f"req-{i}"] == "green")})  # fmt: skip
            assert fb.status_code == 200, fb.text
            assert fb.json()["counted"] is True and fb.json()["deployment"] == served[f"req-{i}"]
        time.sleep(1.5)  # a flush of both instances
        arms = _arms(client, one)
        counts = Counter(served.values())
        assert {n: (a["pulls"], a["feedback"]) for n, a in arms.items()} == {
            n: (counts[n], counts[n]) for n in ("blue", "green")}  # fmt: skip
        assert arms["green"]["mean_reward"] == 1.0 and arms["blue"]["mean_reward"] == 0.0
        assert arms["green"]["share"] >= 0.9, arms
        last = Counter(client.post(f"{url}/score", json=BODY).headers["x-deployment"]
                       for _ in range(100))  # fmt: skip
        assert last["green"] >= 80, last


def test_bad_feedback_is_refused_and_changes_nothing(
    stack: tuple[StrategyStack, str, str],
) -> None:
    _, one, _ = stack
    url = f"{one}/api/endpoints/bandit"
    with httpx.Client(timeout=30) as client:
        r = client.post(f"{url}/score", json=BODY, headers={"x-request-id": "dup-1"})
        dep = r.headers["x-deployment"]
        ok = client.post(f"{url}/feedback", json={"request_id": "dup-1", "reward": 1})
        assert ok.json() == {"endpoint": "bandit", "request_id": "dup-1", "deployment": dep,
                             "reward": 1.0, "counted": True, "duplicate": False}  # fmt: skip
        time.sleep(1.5)
        before = _arms(client, one)
        cases = [
            ({"request_id": "dup-1", "reward": 1}, 200, None),
            ({"request_id": "never-served", "reward": 1}, 404,
             "request id 'never-served' is unknown to endpoint 'bandit': it was not served by "
             "this endpoint within the feedback window (60 s), or has expired; send the "
             "x-request-id of a scoring response"),
            ({"request_id": "dup-1", "reward": 0.5}, 400,
             "field reward is 0.5; this endpoint's rewards are binary: 0 or 1"),
            ({"request_id": "dup-1", "reward": "yes"}, 400,
             "field reward must be a number; got str 'yes'"),
            ({"request_id": "dup-1"}, 400,
             "field reward is missing; expected request_id and reward"),
            ({"request_id": 7, "reward": 1}, 400,
             "field request_id must be a non-empty string (a response's x-request-id); got 7"),
        ]  # fmt: skip
        for body, status, message in cases:
            r = client.post(f"{url}/feedback", json=body)
            assert r.status_code == status, (body, r.text)
            if message is not None:
                assert r.json() == {"error": message}
            else:
                assert r.json()["duplicate"] is True and r.json()["counted"] is False
        r = client.post(f"{url}/feedback", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"].startswith("request body is not valid JSON")
        r = client.post(f"{one}/api/endpoints/weights/feedback", json={"request_id": "x", "reward": 1})
        assert r.json() == {"error": "endpoint 'weights' routes by fixed weights; feedback is "
                                     "taken only with traffic.mode bandit"}  # fmt: skip
        time.sleep(1.5)
        after = _arms(client, one)
        assert {n: (a["pulls"], a["feedback"], a["mean_reward"]) for n, a in after.items()} == {
            n: (a["pulls"], a["feedback"], a["mean_reward"]) for n, a in before.items()}  # fmt: skip
        # still serving
        assert client.post(f"{url}/score", json=BODY).status_code == 200



def test_stats_shows_the_arms_of_a_bandit_endpoint(
    stack: tuple[StrategyStack, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.cli import main as scorefn

    s, _, _ = stack
    router = s.router("metrics", SCOREFN_TELEMETRY_EXPORTER="prometheus")
    with httpx.Client(timeout=30) as client:
        for i in range(20):  # this instance's first bandit requests: its gauges start
            r = client.post(f"{router}/api/endpoints/bandit/score", json=BODY,
                            headers={"x-request-id": f"stats-{i}"})  # fmt: skip
            assert r.status_code == 200
        time.sleep(1.5)  # a flush of every instance; nothing is sent meanwhile
        arms = _arms(client, router)
    args = ["stats", "bandit", "--storage", s.storage, "--router-url", router, "--interval", "0.1"]
    assert scorefn([*args, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["bandit"]["policy"] == "thompson"
    shown = {a["deployment"]: a for a in document["bandit"]["arms"]}
    assert set(shown) == set(arms) == {"blue", "green"}
    for name, arm in arms.items():
        assert shown[name]["pulls"] == arm["pulls"] > 0
        assert shown[name]["mean_reward"] == pytest.approx(arm["mean_reward"], abs=1e-6)
        assert shown[name]["share"] == pytest.approx(arm["share"], abs=1e-4)
        assert 0 < shown[name]["posterior_mean"] < 1
    assert scorefn(args) == 0
    table = capsys.readouterr().out.splitlines()
    at = table.index("bandit arms (policy thompson; every router, as of its last flush)")
    assert table[at + 1].split() == ["arm", "pulls", "mean", "reward", "posterior", "mean",
                                     "share"]  # fmt: skip
    assert [line.split()[0] for line in table[at + 2 :]] == ["blue", "green"]
