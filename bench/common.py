"""Helpers shared by the benchmarks: a batch job run end to end through the local hosts, a
worker's peak resident memory, and a Python pinned to one core."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.data.tables import TableServiceClient
from azure.storage.blob import BlobServiceClient, ContainerClient


@dataclass(frozen=True)
class JobRun:
    seconds: float
    """From the end of the upload to the job's ``_SUCCESS``."""
    uploaded: float
    """Wall-clock time (``time.time()``) the upload ended."""
    job: str
    summary: dict[str, Any]
    """The job's summary.json."""


def upload_and_wait(
    blobs: BlobServiceClient, tables: TableServiceClient, name: str, data: bytes
) -> JobRun:
    """Upload ``data`` as ``batch-input/<name>`` and wait for its job (table ``jobs``) to
    commit ``batch-output/bench/<job>/_SUCCESS``; a failed job raises with its summary."""
    blobs.get_container_client("batch-input").upload_blob(
        name, data, overwrite=True, max_concurrency=4
    )
    started = time.perf_counter()
    uploaded = time.time()
    output: ContainerClient = blobs.get_container_client("batch-output")
    jobs = tables.get_table_client("jobs")
    while True:
        for job in jobs.query_entities("blob eq @b", parameters={"b": name}):
            path = f"bench/{job['RowKey']}/"
            if job["state"] == "failed":
                summary = output.download_blob(path + "summary.json").readall()
                raise RuntimeError(f"job {job['RowKey']} failed: {summary.decode()}")
            if job["state"] == "succeeded" and output.get_blob_client(path + "_SUCCESS").exists():
                seconds = time.perf_counter() - started
                document = json.loads(output.download_blob(path + "summary.json").readall())
                return JobRun(seconds, uploaded, str(job["RowKey"]), document)
        time.sleep(0.05)


def peak_rss_kib(pid: int | None) -> int:
    """Peak resident set size (KiB, ``VmHWM``) of a live process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


CPU_PROFILE = Path(__file__).resolve().parent / "cpu_profile.py"


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its live descendants."""
    if pid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    used: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        proc = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(proc)
        used[proc] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        proc = todo.pop()
        total += used.get(proc, 0.0)
        todo.extend(children.get(proc, []))
    return total


def pinned_python(workdir: Path, core: int, profile: Path | None = None) -> Path:
    """An executable that runs this Python pinned to ``core`` (optionally under cProfile).

    ``HostProcess`` runs ``<python> -m shared.localhost ...``; this wrapper ``exec``s, so
    the host's pid is the Python process that SIGTERM reaches.
    """
    name = f"python-core{core}" + (f"-{profile.stem}" if profile else "")
    wrapper = workdir / name
    prefix = f"'{CPU_PROFILE}' '{profile}' " if profile is not None else ""
    wrapper.write_text(f"#!/bin/sh\nexec taskset -c {core} '{sys.executable}' {prefix}\"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def release_work_folder(workdir: Path, keep: bool) -> None:
    """Remove a benchmark's work folder, or (``keep``) say where it was left."""
    if keep:
        print(f"work folder kept: {workdir}", flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
