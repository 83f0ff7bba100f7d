"""``scorefn batch``: submit, follow and resume batch jobs, straight against storage.

    scorefn batch submit fraud fraud/day1.csv [--deployment blue] [--model fraud:2]
                         [--id-columns txn_id] [--output-format parquet] [--wait]
    scorefn batch status fraud <job>
    scorefn batch list fraud
    scorefn batch resume fraud <job>

These use the storage account (``--storage``, default ``BatchSettings``: the app's
``AzureWebJobsStorage``, else Azurite) with the same code the router's job API runs
(``shared.batch.jobs``); through the router, use ``POST/GET /api/endpoints/{e}/jobs``.
Submit picks the endpoint's deployment with the most traffic unless ``--deployment``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson

from shared.batch.jobs import BatchJobs, JobRequest, pick_deployment

__all__ = ["add_batch_parser"]


def _print(obj: Any) -> None:
    print(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode())


def _jobs(args: argparse.Namespace) -> BatchJobs:
    from shared.settings import BatchSettings

    settings = BatchSettings()
    if args.storage:  # a connection string given here wins over identity-based URLs
        none = dict.fromkeys(("blobs_url", "queues_url", "tables_url", "client_id"))
        settings = settings.model_copy(update={"storage": args.storage, **none})
    return BatchJobs(settings)


def _wait(jobs: BatchJobs, endpoint: str, job: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record = jobs.get(endpoint, job)
        if record.state in ("succeeded", "failed") or time.monotonic() > deadline:
            return jobs.view(record)
        time.sleep(1.0)


def _submit(args: argparse.Namespace) -> int:
    jobs = _jobs(args)
    deployment = args.deployment
    if deployment is None:
        from shared.routing.store import EndpointStore

        stored = EndpointStore.from_connection_string(jobs.settings.storage).get(args.endpoint)
        names = [d.name for d in stored.spec.deployments]
        deployment = pick_deployment(names, stored.spec.traffic, None)
    request = JobRequest(
        input=args.input,
        deployment=deployment,
        model=args.model,
        id_columns=args.id_columns.split(",") if args.id_columns is not None else None,
        output_format=args.output_format,
    )
    record, created = jobs.submit(args.endpoint, request, deployment=deployment)
    view = _wait(jobs, args.endpoint, record.job, args.timeout) if args.wait else jobs.view(record)
    _print({**view, "created_now": created})
    return 0 if view["state"] != "failed" else 1


def _status(args: argparse.Namespace) -> int:
    jobs = _jobs(args)
    _print(jobs.view(jobs.get(args.endpoint, args.job)))
    return 0


def _list(args: argparse.Namespace) -> int:
    _print(_jobs(args).recent(args.endpoint, args.limit))
    return 0


def _resume(args: argparse.Namespace) -> int:
    jobs = _jobs(args)
    record, sent = jobs.resume(args.endpoint, args.job)
    view = _wait(jobs, args.endpoint, record.job, args.timeout) if args.wait else jobs.view(record)
    _print({**view, "chunks_sent": sent})
    return 0 if view["state"] != "failed" else 1


def add_batch_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``scorefn batch`` on the CLI's subparsers."""
    batch = sub.add_parser("batch", help="batch jobs: submit, status, list, resume")
    bsub = batch.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("endpoint", help="endpoint name")
        p.add_argument("--storage", help="storage connection string (default: settings)")

    def waiting(p: argparse.ArgumentParser) -> None:
        p.add_argument("--wait", action="store_true", help="wait until the job ends")
        p.add_argument("--timeout", type=float, default=3600.0, help="most seconds to wait")

    submit = bsub.add_parser("submit", help="score a blob as a job (same blob: same job)")
    common(submit)
    submit.add_argument("input", help="<endpoint>/<file> in the input container, or a blob URL")
    submit.add_argument("--deployment", help="default: the endpoint's largest traffic share")
    submit.add_argument(
        "--model",
        help="name[:version] (default: the deployment's first), or a template naming a "
        "partition column: 'sales-{store_id}' scores each row with its store's model",
    )
    submit.add_argument("--id-columns", help="comma-separated columns copied to predictions")
    submit.add_argument("--output-format", choices=["csv", "parquet"])
    waiting(submit)
    submit.set_defaults(func=_submit)

    status = bsub.add_parser("status", help="a job's state, progress, counts and outputs")
    common(status)
    status.add_argument("job")
    status.set_defaults(func=_status)

    recent = bsub.add_parser("list", help="an endpoint's recent jobs")
    common(recent)
    recent.add_argument("--limit", type=int, default=20)
    recent.set_defaults(func=_list)

    resume = bsub.add_parser("resume", help="re-run a failed job's unfinished chunks only")
    common(resume)
    resume.add_argument("job")
    waiting(resume)
    resume.set_defaults(func=_resume)
