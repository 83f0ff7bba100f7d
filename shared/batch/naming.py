"""Names: the job id of a blob version, and the blob paths a job reads and writes.

Input convention: ``batch-input/<endpoint>/<path>``; when ``<path>`` starts with a folder
``model=<name>`` or ``model=<name>:<version>``, that model of the scoring app scores the
file, otherwise the app's first model (``SCOREFN_MODELS``). A template
``model=sales-{store_id}`` scores each row with the model its ``store_id`` value names
(``shared.batch.partitioned``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = [
    "InputName",
    "job_id",
    "parse_input_name",
    "staging_prefix",
    "chunk_blob",
    "output_prefix",
    "plan_blob",
    "plan_queue_name",
]

_MODEL_FOLDER = "model="


def job_id(url: str, etag: str) -> str:
    """The id of the job scoring one version of one blob.

    Derived from the blob URL without its query (a SAS token is not part of the name) and
    the ETag without quotes: the same upload seen twice gives the same id, a new upload of
    the same name a new one. 32 hex digits.
    """
    parts = urlsplit(url)
    canonical = f"{parts.scheme.lower()}://{parts.netloc.lower()}{unquote(parts.path)}"
    text = f"{canonical}\n{etag.strip(chr(34))}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class InputName:
    """What a blob name under the input container says."""

    endpoint: str
    path: str
    """The name under ``<endpoint>/``."""
    model: str | None
    version: str | None


def parse_input_name(blob_name: str) -> InputName | None:
    """``fraud/model=fraud:2/day1.csv`` -> endpoint fraud, model fraud, version 2.

    ``None`` for a name without an endpoint folder and a file under it.
    """
    endpoint, _, path = blob_name.partition("/")
    if not endpoint or not path or path.endswith("/"):
        return None
    model = version = None
    first, sep, rest = path.partition("/")
    if sep and first.startswith(_MODEL_FOLDER) and rest:
        name, _, ver = first[len(_MODEL_FOLDER) :].partition(":")
        model, version = (name or None), (ver or None)
    return InputName(endpoint, path, model, version)


def staging_prefix(job: str) -> str:
    """Folder of a job's staged chunk parts in the staging container."""
    return f"{job}/"


def chunk_blob(job: str, chunk: int, kind: str) -> str:
    """Staged blob of one chunk: ``<job>/<chunk:06d>.<kind>`` (same name on retry)."""
    return f"{job}/{chunk:06d}.{kind}"


def output_prefix(endpoint: str, job: str) -> str:
    """Folder of a job's outputs in the output container."""
    return f"{endpoint}/{job}/"


def plan_blob(job: str) -> str:
    """Staged plan of a job: its chunk ranges, read back by resume."""
    return f"{job}/plan.json"


def plan_queue_name(template: str, deployment: str) -> str:
    """The plan queue of ``deployment``: ``template`` with ``{deployment}`` replaced
    (queue names are lower case)."""
    return template.replace("{deployment}", deployment).lower()
