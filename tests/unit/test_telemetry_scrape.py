"""Reading Prometheus text back: sums by label, histogram quantiles, stats rows."""

from __future__ import annotations

import pytest

from shared.telemetry.cli import render, summarize
from shared.telemetry.scrape import Sample, histogram_quantile, parse, total

TEXT = """\
# TYPE scorefn_request_duration_seconds histogram
scorefn_request_duration_seconds_bucket{deployment="blue",http_response_status_code="200",le="0.001",role="router",endpoint="e"} 2
scorefn_request_duration_seconds_bucket{deployment="blue",http_response_status_code="200",le="0.01",role="router",endpoint="e"} 10
scorefn_request_duration_seconds_bucket{deployment="blue",http_response_status_code="200",le="+Inf",role="router",endpoint="e"} 10
scorefn_request_duration_seconds_count{deployment="blue",http_response_status_code="200",role="router",endpoint="e"} 10
scorefn_request_duration_seconds_sum{deployment="blue",http_response_status_code="200",role="router",endpoint="e"} 0.05
scorefn_request_duration_seconds_bucket{deployment="blue",http_response_status_code="503",le="0.001",role="router",endpoint="e"} 0
scorefn_request_duration_seconds_bucket{deployment="blue",http_response_status_code="503",le="0.01",role="router",endpoint="e"} 0
scorefn_request_duration_seconds_bucket{deployment="blue",http_response_status_code="503",le="+Inf",role="router",endpoint="e"} 2
scorefn_request_duration_seconds_count{deployment="blue",http_response_status_code="503",role="router",endpoint="e"} 2
scorefn_request_duration_seconds_sum{deployment="blue",http_response_status_code="503",role="router",endpoint="e"} 60
# TYPE scorefn_mirror_copies_total counter
scorefn_mirror_copies_total{deployment="green",endpoint="e",outcome="matched"} 3
scorefn_mirror_copies_total{deployment="green",endpoint="e",outcome="mismatched"} 1
"""


def test_total_sums_matching_samples() -> None:
    samples = parse(TEXT)
    assert total(samples, "scorefn_request_duration_seconds_count") == 12
    assert total(samples, "scorefn_request_duration_seconds_count",
                 http_response_status_code="503") == 2  # fmt: skip
    assert total(samples, "scorefn_mirror_copies_total", outcome="matched") == 3
    assert total(samples, "no_such_metric") == 0


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    samples = parse(TEXT)
    name = "scorefn_request_duration_seconds"
    # 12 requests: 2 <= 1 ms, 8 in (1, 10] ms, 2 above 10 ms.
    assert histogram_quantile(samples, name, 0.5) == pytest.approx(0.001 + 0.009 * 4 / 8)
    assert histogram_quantile(samples, name, 0.99) == 0.01  # +Inf bucket: the last bound
    assert histogram_quantile(samples, name, 0.5, deployment="green") is None
    empty = [Sample(f"{name}_bucket", {"le": "+Inf"}, 0.0)]
    assert histogram_quantile(empty, name, 0.5) is None


def test_summarize_uses_the_window_and_mirror_counts() -> None:
    after = parse(TEXT)
    rows = summarize("e", ["blue", "green", "gone"], router=([], after),
                     hosts={"blue": None, "green": None, "gone": None},
                     interval_s=2.0)  # fmt: skip
    blue, green, gone = rows
    assert (blue.source, blue.requests, blue.req_per_s) == ("router", 12, 6.0)
    assert blue.error_rate == pytest.approx(2 / 12)
    assert blue.p50_ms == pytest.approx(5.5)
    assert green.requests == 0 and green.mirror_agreement == 0.75 and green.p50_ms is None
    assert gone.requests == 0
    text = render("e", rows, 2.0)
    assert "blue        router  12        6.0    5.50    10.00   16.7%" in text
    assert text.splitlines()[0] == "endpoint e (req/s over 2 s)"
    rows = summarize("e", ["blue"], router=None, hosts={"blue": None}, interval_s=1.0)
    assert rows[0].source == "unreachable"
    # each source's own seconds between its two scrapes, when known
    rows = summarize("e", ["blue"], router=([], after), hosts={"blue": None},
                     interval_s=2.0, windows={"@router": 3.0})  # fmt: skip
    assert rows[0].req_per_s == 4.0
