"""``scorefn stats <endpoint>``: a terminal summary per deployment, read from the local
hosts' Prometheus endpoints (telemetry exporter ``prometheus``).

The endpoint's spec (from the endpoints table) names its deployments and their local
ports; the router's ``/metrics`` gives requests, latency and errors per deployment as
callers see them, and mirror agreement; each deployment's own ``/metrics`` gives its
batch sizes (and its requests when the router cannot be scraped). Two scrapes
``--interval`` seconds apart give req/s; latency quantiles and error rate are over that
window when it saw requests, else since the hosts started. A bandit endpoint
(``traffic.mode: bandit``) also gets its arms: pulls, mean reward, posterior mean and
share, from the router's bandit gauges (every router's counts as of its last flush).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from shared.errors import UpstreamError
from shared.telemetry.scrape import Sample, fetch, histogram_quantile, total

__all__ = [
    "BanditArm",
    "DeploymentStats",
    "add_stats_parser",
    "bandit_arms",
    "render",
    "render_arms",
    "summarize",
]

_DURATION = "scorefn_request_duration_seconds"
_DEFAULT_ROUTER = "http://127.0.0.1:7071"


@dataclass(frozen=True)
class DeploymentStats:
    """One row of ``scorefn stats``; None where nothing was measured."""

    deployment: str
    source: str
    """Whose metrics: ``router`` (callers' view), ``deployment`` (its own), or why none."""
    requests: int
    req_per_s: float | None
    p50_ms: float | None
    p99_ms: float | None
    error_rate: float | None
    batch_rows: float | None
    mirror_agreement: float | None


@dataclass(frozen=True)
class BanditArm:
    """One arm of a bandit endpoint in ``scorefn stats``; None where not reported."""

    deployment: str
    pulls: int | None
    mean_reward: float | None
    posterior_mean: float | None
    share: float | None


def _gauge(samples: Sequence[Sample], name: str, **labels: str) -> float | None:
    values = [s.value for s in samples if s.name == name
              and all(s.labels.get(k) == v for k, v in labels.items())]  # fmt: skip
    return values[-1] if values else None


def bandit_arms(
    endpoint: str, arms: Sequence[str], router: Sequence[Sample] | None
) -> list[BanditArm]:
    """The arms' figures from the router's scrape (None: the router was not scraped)."""
    samples = router or []
    rows: list[BanditArm] = []
    for arm in arms:
        labels = {"endpoint": endpoint, "deployment": arm}
        pulls = _gauge(samples, "scorefn_bandit_pulls", **labels)
        rows.append(
            BanditArm(
                deployment=arm,
                pulls=None if pulls is None else int(pulls),
                mean_reward=_gauge(samples, "scorefn_bandit_mean_reward", **labels),
                posterior_mean=_gauge(samples, "scorefn_bandit_posterior_mean", **labels),
                share=_gauge(samples, "scorefn_bandit_share", **labels),
            )
        )
    return rows


def render_arms(policy: str, arms: Sequence[BanditArm]) -> str:
    """The bandit arms as an aligned text table."""
    header = ("arm", "pulls", "mean reward", "posterior mean", "share")
    table = [header] + [
        (
            a.deployment,
            "-" if a.pulls is None else str(a.pulls),
            _cell(a.mean_reward, ".4f"),
            _cell(a.posterior_mean, ".4f"),
            _percent(a.share),
        )
        for a in arms
    ]
    return _aligned(f"bandit arms (policy {policy}; every router, as of its last flush)", table)


def _window(before: Sequence[Sample], after: Sequence[Sample]) -> list[Sample]:
    """``after`` minus ``before``, sample by sample (counters and histograms only grow)."""
    earlier = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in before}
    return [
        Sample(
            s.name, s.labels, s.value - earlier.get((s.name, tuple(sorted(s.labels.items()))), 0)
        )
        for s in after
    ]


def _requests(samples: Sequence[Sample], labels: Mapping[str, str]) -> tuple[float, float]:
    """(requests, failed requests: status >= 400) among ``samples`` matching labels."""
    count = error = 0.0
    for s in samples:
        if s.name != f"{_DURATION}_count":
            continue
        if all(s.labels.get(k) == v for k, v in labels.items()):
            count += s.value
            status = s.labels.get("http_response_status_code", "0")
            if status.isdigit() and int(status) >= 400:
                error += s.value
    return count, error


def summarize(
    endpoint: str,
    deployments: Sequence[str],
    *,
    router: tuple[Sequence[Sample], Sequence[Sample]] | None,
    hosts: Mapping[str, tuple[Sequence[Sample], Sequence[Sample]] | None],
    interval_s: float,
    windows: Mapping[str, float] | None = None,
) -> list[DeploymentStats]:
    """Rows from two scrapes (before, after) of the router and of each deployment's host
    (None: could not be scraped). ``windows``: seconds between a source's two scrapes
    (``@router`` for the router), else ``interval_s``."""
    seconds = windows or {}
    rows: list[DeploymentStats] = []
    for name in deployments:
        host = hosts.get(name)
        if router is not None:
            source, pair = "router", router
            labels = {"role": "router", "endpoint": endpoint, "deployment": name}
            span_s = seconds.get("@router", interval_s)
        elif host is not None:
            source, pair = "deployment", host
            labels = {"role": "scoring", "deployment": name}
            span_s = seconds.get(name, interval_s)
        else:
            rows.append(DeploymentStats(name, "unreachable", 0, *([None] * 6)))
            continue
        before, after = pair
        window = _window(before, after)
        count, errors = _requests(after, labels)
        recent, recent_errors = _requests(window, labels)
        basis, basis_count, basis_errors = (
            (window, recent, recent_errors) if recent > 0 else (after, count, errors)
        )
        p50 = histogram_quantile(basis, _DURATION, 0.5, **labels)
        p99 = histogram_quantile(basis, _DURATION, 0.99, **labels)
        batch = None
        if host is not None:
            rows_sum = total(host[1], "scorefn_batcher_batch_size_sum")
            batches = total(host[1], "scorefn_batcher_batch_size_count")
            batch = rows_sum / batches if batches else None
        agreement = None
        if router is not None:
            copies = {"endpoint": endpoint, "deployment": name}
            matched = total(router[1], "scorefn_mirror_copies_total", outcome="matched", **copies)
            differ = total(router[1], "scorefn_mirror_copies_total", outcome="mismatched", **copies)
            agreement = matched / (matched + differ) if matched + differ else None
        rows.append(
            DeploymentStats(
                deployment=name,
                source=source,
                requests=int(count),
                req_per_s=recent / span_s if span_s > 0 else None,
                p50_ms=None if p50 is None else p50 * 1000,
                p99_ms=None if p99 is None else p99 * 1000,
                error_rate=basis_errors / basis_count if basis_count else None,
                batch_rows=batch,
                mirror_agreement=agreement,
            )
        )
    return rows


def _cell(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}%"


def render(endpoint: str, rows: Sequence[DeploymentStats], interval_s: float) -> str:
    """The rows as an aligned text table."""
    header = ("deployment", "source", "requests", "req/s", "p50 ms", "p99 ms", "errors",
              "batch rows", "mirror agree")  # fmt: skip
    table = [header] + [
        (
            r.deployment,
            r.source,
            str(r.requests),
            _cell(r.req_per_s, ".1f"),
            _cell(r.p50_ms, ".2f"),
            _cell(r.p99_ms, ".2f"),
            _percent(r.error_rate),
            _cell(r.batch_rows, ".1f"),
            _percent(r.mirror_agreement),
        )
        for r in rows
    ]
    return _aligned(f"endpoint {endpoint} (req/s over {interval_s:g} s)", table)


def _aligned(title: str, table: Sequence[Sequence[str]]) -> str:
    """``title`` over ``table`` (its first row the header), each column padded to its widest."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = [title]
    lines += [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table
    ]
    return "\n".join(line.rstrip() for line in lines)


def _scrape_twice(
    urls: Mapping[str, str], interval_s: float
) -> tuple[dict[str, tuple[list[Sample], list[Sample]] | None], dict[str, float]]:
    """Two scrapes of each URL ``interval_s`` apart, and the seconds between each URL's
    own two scrapes (slow scrapes of the others lengthen it)."""
    first: dict[str, list[Sample] | None] = {}
    at: dict[str, float] = {}
    for name, url in urls.items():
        try:
            first[name] = fetch(url)
            at[name] = time.monotonic()
        except UpstreamError:
            first[name] = None
    time.sleep(interval_s)
    out: dict[str, tuple[list[Sample], list[Sample]] | None] = {}
    windows: dict[str, float] = {}
    for name, url in urls.items():
        earlier = first[name]
        try:
            out[name] = None if earlier is None else (earlier, fetch(url))
        except UpstreamError:
            out[name] = None
        if out[name] is not None:
            windows[name] = time.monotonic() - at[name]
    return out, windows


def _stats(args: argparse.Namespace) -> int:
    from shared.routing.store import EndpointStore
    from shared.settings import RouterSettings

    store = EndpointStore.from_connection_string(args.storage or RouterSettings().storage)
    try:
        spec = store.get(args.endpoint).spec
    finally:
        store.close()
    urls = {"@router": args.router_url}
    for d in spec.deployments:
        try:
            urls[d.name] = d.base_url(args.port_shift)
        except ValueError:
            continue
    scraped, windows = _scrape_twice(urls, args.interval)
    router = scraped.pop("@router")
    names = [d.name for d in spec.deployments]
    rows = summarize(
        spec.name, names, router=router, hosts=scraped, interval_s=args.interval, windows=windows
    )
    arms: list[BanditArm] | None = None
    if spec.bandit is not None:
        live = [n for n, w in spec.traffic.items() if w > 0]
        arms = bandit_arms(spec.name, live, None if router is None else router[1])
    if args.json:
        document: dict[str, Any] = {
            "endpoint": spec.name,
            "interval_s": args.interval,
            "router": "ok" if router is not None else f"unreachable ({args.router_url})",
            "deployments": [asdict(r) for r in rows],
        }
        if arms is not None and spec.bandit is not None:
            document["bandit"] = {"policy": spec.bandit.policy,
                                  "arms": [asdict(a) for a in arms]}  # fmt: skip
        print(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render(spec.name, rows, args.interval))
        if arms is not None and spec.bandit is not None:
            print(render_arms(spec.bandit.policy, arms))
        if router is None:
            print(f"(router {args.router_url}/metrics could not be scraped)")
    if router is None and all(scraped.get(n) is None for n in names):
        raise UpstreamError(
            f"no metrics: neither the router ({args.router_url}) nor a deployment of "
            f"{spec.name!r} answered GET /metrics; start them with "
            "SCOREFN_TELEMETRY_EXPORTER=prometheus"
        )
    return 0


def add_stats_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``scorefn stats`` on the CLI's subparsers."""
    p = sub.add_parser("stats", help="per-deployment req/s, latency, errors, batching, mirror")
    p.add_argument("endpoint", help="endpoint name (its spec is read from the endpoints table)")
    p.add_argument("--storage", help="storage connection string (default: settings)")
    p.add_argument("--router-url", default=_DEFAULT_ROUTER, help="the router's base URL")
    p.add_argument("--port-shift", type=int, default=0, help="added to deployments' local ports")
    p.add_argument(
        "--interval", type=float, default=2.0, help="seconds between the two scrapes (req/s)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_stats)
