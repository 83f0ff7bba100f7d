"""The servable models of a deployment: the store's blob listing filtered by the
deployment's rules, re-listed every ``refresh_s`` seconds.

With a ``prober`` (the store's names-only listing, a tenth of the CPU of a full listing
with properties) a refresh first compares the container's blob names with those seen at
the last full listing, and lists in full only when they changed (a push adds, removes or
renames blobs: its marker is named by the pushed content) or ``full_every`` refreshes
have passed (content replaced by other tools under the same names).

A failed listing keeps the last good snapshot (models already known keep serving) and
records why; while the store cannot be listed, a name the snapshot does not know is
answered with 503 + ``Retry-After`` (it may have been pushed), not 404.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.errors import NotFoundError, NotReadyError
from shared.modelstore.blobstore import STORE_RETRY_AFTER_S, PackageListing
from shared.modelstore.policy import ModelRule, servable_versions

__all__ = ["IndexSnapshot", "StoreIndex"]

Lister = Callable[[], Mapping[tuple[str, str], PackageListing]]
Prober = Callable[[], frozenset[str]]


@dataclass(frozen=True)
class IndexSnapshot:
    """One filtered listing: ``{name: {version: listing}}`` (versions ascending), and
    since when it holds (the start of the refresh that made or confirmed it)."""

    models: dict[str, dict[str, PackageListing]] = field(default_factory=dict)
    listed_at: float = 0.0

    def latest(self, name: str) -> PackageListing:
        """The highest servable version of ``name`` (the caller checked it is served)."""
        return list(self.models[name].values())[-1]


def _snapshot(
    rules: Sequence[ModelRule], listing: Mapping[tuple[str, str], PackageListing], now: float
) -> IndexSnapshot:
    available: dict[str, list[str]] = {}
    for name, version in listing:
        available.setdefault(name, []).append(version)
    chosen = servable_versions(rules, available)
    return IndexSnapshot(
        {name: {v: listing[(name, v)] for v in versions} for name, versions in chosen.items()},
        now,
    )


class StoreIndex:
    """Thread-safe cache of the servable listing; ``refresh()`` re-lists."""

    def __init__(
        self,
        lister: Lister,
        rules: Sequence[ModelRule],
        *,
        refresh_s: float = 5.0,
        prober: Prober | None = None,
        full_every: int = 12,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lister = lister
        self._prober = prober
        self._full_every = full_every
        self._rules = list(rules)
        self.refresh_s = refresh_s
        self._clock = clock
        self._names: frozenset[str] | None = None
        """Blob names probed just before the last full listing."""
        self._probes = 0
        """Refreshes answered by the probe alone since the last full listing."""
        self.full_listings = 0
        """Full listings so far (tests, diagnostics)."""
        self._snapshot: IndexSnapshot | None = None
        self._lock = threading.Lock()
        self.error = ""
        """Why the last listing failed ('' when it succeeded)."""
        self.error_retry_after = STORE_RETRY_AFTER_S

    @property
    def snapshot(self) -> IndexSnapshot | None:
        """The last good snapshot (None before the first successful listing)."""
        return self._snapshot

    @property
    def fresh(self) -> bool:
        """Listed successfully within ``refresh_s``."""
        snap = self._snapshot
        if self.error or snap is None:
            return False
        return self._clock() - snap.listed_at < self.refresh_s

    def refresh(self) -> IndexSnapshot | None:
        """List the store now; on failure keep the last snapshot and record the error."""
        with self._lock:
            started = self._clock()  # what the snapshot can vouch for: after this moment
            try:
                names = None if self._prober is None else self._prober()
                snap = self._snapshot
                if (
                    names is not None
                    and names == self._names
                    and snap is not None
                    and not self.error
                    and self._probes + 1 < self._full_every
                ):
                    self._probes += 1
                    self._snapshot = dataclasses.replace(snap, listed_at=started)
                    return self._snapshot
                listing = self._lister()
            except NotReadyError as exc:
                self.error = str(exc)
                self.error_retry_after = exc.retry_after
                return self._snapshot
            self._names, self._probes = names, 0
            self.full_listings += 1
            self._snapshot = _snapshot(self._rules, listing, started)
            self.error = ""
            return self._snapshot

    def resolve(self, name: str, version: str | None) -> PackageListing:
        """The listing serving ``name`` (latest servable version when ``version`` is None).
        ``NotFoundError`` naming what is served; ``NotReadyError`` when the store cannot be
        listed and the snapshot does not know the model."""
        snap = self._snapshot
        if snap is None or (self.error and not _has(snap, name, version)):
            raise NotReadyError(
                self.error or "the model store has not been listed yet", self.error_retry_after
            )
        versions = snap.models.get(name)
        if versions is None:
            known = sorted(snap.models)
            more = f" and {len(known) - 20} more" if len(known) > 20 else ""
            shown = ", ".join(known[:20]) + more
            raise NotFoundError(
                f"model '{name}' not found; this deployment serves {shown or 'no model'}"
            )
        if version is None:
            return snap.latest(name)
        found = versions.get(version)
        if found is None:
            raise NotFoundError(
                f"model '{name}' has no version '{version}'; versions: {', '.join(versions)}"
            )
        return found


def _has(snap: IndexSnapshot, name: str, version: str | None) -> bool:
    versions = snap.models.get(name)
    return versions is not None and (version is None or version in versions)
