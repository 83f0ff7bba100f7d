"""The router's batch job API, on real ``azure.functions`` request/response objects.

    POST /api/endpoints/{e}/jobs                 JobRequest body -> 202 + job, Location
    GET  /api/endpoints/{e}/jobs                 recent jobs, newest first (?limit=)
    GET  /api/endpoints/{e}/jobs/{job}           state, progress, counts, outputs, failures
    POST /api/endpoints/{e}/jobs/{job}/resume    re-run the chunks that are not done

Every route is authorized as scoring is (``Router.authorized`` with the invoke role). The
router only records jobs and sends plan messages (``shared.batch.jobs``, no numpy or
pyarrow); the chosen deployment's scoring app plans and scores. Submitting the same blob
version twice gives the same job (200 the second time, 202 when it is new). Storage calls
are synchronous SDK calls run in a worker thread; storage failures answer 502.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import azure.functions as func
import orjson
from azure.core.exceptions import AzureError

from shared.batch.jobs import BatchJobs, JobRequest, pick_deployment
from shared.errors import DecodeError, UpstreamError
from shared.routing.router import Router
from shared.settings import BatchSettings

__all__ = ["JobsApi"]

_T = TypeVar("_T")
_JSON = "application/json"


def _json(
    obj: object, status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        orjson.dumps(obj), status_code=status, mimetype=_JSON, headers=headers or {}
    )


class JobsApi:
    """Handlers of the job routes, bound to the router (for auth and endpoint configs)."""

    def __init__(self, router: Router, settings: BatchSettings | None = None) -> None:
        self.router = router
        self._settings = settings
        self._jobs: BatchJobs | None = None

    def _client(self) -> BatchJobs:
        if self._jobs is None:  # built on first use: importing the router connects nothing
            self._jobs = BatchJobs(self._settings or BatchSettings())
        return self._jobs

    async def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except AzureError as exc:
            raise UpstreamError(f"batch storage could not be reached: {exc}") from exc

    @staticmethod
    def _location(endpoint: str, job: str) -> str:
        return f"/api/endpoints/{endpoint}/jobs/{job}"

    async def submit(self, req: func.HttpRequest, request_id: str) -> func.HttpResponse:
        """POST endpoints/{endpoint}/jobs."""
        endpoint = req.route_params["endpoint"]
        stored = await self.router.authorized(endpoint, req.headers.get("authorization"), "invoke")
        request = JobRequest.loads(req.get_body() or b"")
        names = [d.name for d in stored.spec.deployments]
        deployment = pick_deployment(names, stored.spec.traffic, request.deployment)
        jobs = self._client()
        record, created = await self._call(jobs.submit, endpoint, request, deployment=deployment)
        view = await self._call(jobs.view, record)
        location = self._location(endpoint, record.job)
        return _json(view, 202 if created else 200, {"Location": location})

    async def list(self, req: func.HttpRequest, request_id: str) -> func.HttpResponse:
        """GET endpoints/{endpoint}/jobs[?limit=N]."""
        endpoint = req.route_params["endpoint"]
        await self.router.authorized(endpoint, req.headers.get("authorization"), "invoke")
        text = req.params.get("limit", "50")
        if not text.isdigit() or not 1 <= int(text) <= 1000:
            raise DecodeError(f"query limit: expected an integer 1..1000, got {text!r}")
        jobs = await self._call(self._client().recent, endpoint, int(text))
        return _json({"endpoint": endpoint, "jobs": jobs})

    async def status(self, req: func.HttpRequest, request_id: str) -> func.HttpResponse:
        """GET endpoints/{endpoint}/jobs/{job}."""
        endpoint, job = req.route_params["endpoint"], req.route_params["job"]
        await self.router.authorized(endpoint, req.headers.get("authorization"), "invoke")
        jobs = self._client()
        record = await self._call(jobs.get, endpoint, job)
        return _json(await self._call(jobs.view, record))

    async def resume(self, req: func.HttpRequest, request_id: str) -> func.HttpResponse:
        """POST endpoints/{endpoint}/jobs/{job}/resume."""
        endpoint, job = req.route_params["endpoint"], req.route_params["job"]
        await self.router.authorized(endpoint, req.headers.get("authorization"), "invoke")
        jobs = self._client()
        record, sent = await self._call(jobs.resume, endpoint, job)
        view = await self._call(jobs.view, record)
        return _json(
            {**view, "chunks_sent": sent}, 202, {"Location": self._location(endpoint, job)}
        )
