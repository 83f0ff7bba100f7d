"""Endpoint configuration in table storage: one entity per endpoint, ETag-guarded.

Table ``endpoints``, partition ``endpoint``, row key = the endpoint name. Properties:
``spec`` (the ``EndpointSpec`` as JSON) and ``keys`` (the ``EndpointKeys`` record as
JSON: salted hashes only; empty when the endpoint has none). Every change reads the
entity, builds the new one and replaces it only if its ETag is unchanged
(``MatchConditions.IfNotModified``); on a conflict it reads again and re-applies the
change, so two concurrent ``scorefn traffic set`` never lose an update silently.

The client is the synchronous ``azure-data-tables`` one: the CLI calls it directly and
the router calls it from a worker thread, at most once per endpoint per cache period.
Storage failures become ``UpstreamError``; an unknown endpoint ``NotFoundError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableClient, TableEntity, TableServiceClient, UpdateMode
from pydantic import ValidationError

from shared.auth.keys import EndpointKeys, IssuedKeys, KeySlot
from shared.errors import NotFoundError, RequestError, UpstreamError
from shared.routing.endpoint import EndpointSpec
from shared.routing.traffic import check_mirror, check_traffic

__all__ = ["TABLE", "PARTITION", "EndpointStore", "StoredEndpoint"]

TABLE: Final = "endpoints"
"""The table holding endpoint configs."""
PARTITION: Final = "endpoint"
"""The partition key of every endpoint entity."""
_ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class StoredEndpoint:
    """An endpoint as stored: its spec, its key hashes (if any) and the entity's ETag."""

    spec: EndpointSpec
    keys: EndpointKeys | None
    etag: str


class EndpointStore:
    """Reads and changes endpoint configs in the ``endpoints`` table."""

    def __init__(self, table: TableClient) -> None:
        self._table = table
        self._created = False

    @classmethod
    def from_connection_string(cls, connection_string: str, table: str = TABLE) -> EndpointStore:
        """A store on the account of ``connection_string`` (Azurite: the dev account)."""
        service = TableServiceClient.from_connection_string(connection_string)
        return cls(service.get_table_client(table))

    @classmethod
    def from_url(
        cls, tables_url: str, credential: TokenCredential, table: str = TABLE
    ) -> EndpointStore:
        """A store reached with an Entra credential (the app's managed identity)."""
        return cls(TableServiceClient(endpoint=tables_url, credential=credential)
                   .get_table_client(table))  # fmt: skip

    def close(self) -> None:
        """Close the underlying HTTP pipeline."""
        self._table.close()

    # ---------------------------------------------------------------- reads
    def get(self, name: str) -> StoredEndpoint:
        """The stored endpoint ``name``; ``NotFoundError`` when none is stored."""
        try:
            entity = self._table.get_entity(PARTITION, name)
        except ResourceNotFoundError as exc:
            raise NotFoundError(
                f"endpoint {name!r} is not configured; store it with "
                f"`scorefn endpoint apply endpoints/{name}.yaml`"
            ) from exc
        except AzureError as exc:
            raise UpstreamError(
                f"the endpoint config store is unavailable ({type(exc).__name__})"
            ) from exc
        return _decode(name, entity)

    def names(self) -> list[str]:
        """Names of the stored endpoints."""
        try:
            rows = self._table.query_entities(f"PartitionKey eq '{PARTITION}'", select="RowKey")
            return sorted(str(e["RowKey"]) for e in rows)
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise UpstreamError(
                f"the endpoint config store is unavailable ({type(exc).__name__})"
            ) from exc

    # ---------------------------------------------------------------- writes
    def apply(self, spec: EndpointSpec) -> tuple[StoredEndpoint, IssuedKeys | None]:
        """Store ``spec`` (creating or replacing it); existing keys are kept.

        An endpoint with auth mode ``key`` and no keys yet gets two: their plaintexts
        come back once, in the ``IssuedKeys``.
        """
        self._ensure_table()
        for _ in range(_ATTEMPTS):
            try:
                current: StoredEndpoint | None = self.get(spec.name)
            except NotFoundError:
                current = None
            issued = None
            keys = current.keys if current is not None else None
            if keys is None and spec.auth.mode == "key":
                issued = EndpointKeys.generate(spec.name)
                keys = issued.record
            entity = _encode(spec, keys)
            meta: Mapping[str, Any]
            try:
                if current is None:
                    meta = self._table.create_entity(entity)
                else:
                    meta = self._replace(entity, current.etag)
            except (ResourceExistsError, ResourceModifiedError):
                continue  # someone else wrote meanwhile: read again
            return StoredEndpoint(spec, keys, str(meta["etag"])), issued
        raise UpstreamError(f"endpoint {spec.name!r} kept changing; try again")

    def set_traffic(self, name: str, weights: Mapping[str, object]) -> StoredEndpoint:
        """Replace the traffic weights of ``name``; ``RequestError`` says why not."""
        return self.set_routing(name, traffic=weights)

    def set_mirror(self, name: str, percent: Mapping[str, object]) -> StoredEndpoint:
        """Replace the mirror percentages of ``name``; ``RequestError`` says why not."""
        return self.set_routing(name, mirror=percent)

    def set_routing(
        self,
        name: str,
        *,
        traffic: Mapping[str, object] | None = None,
        mirror: Mapping[str, object] | None = None,
    ) -> StoredEndpoint:
        """Replace traffic and/or mirror of ``name`` in one guarded update; nothing
        changes when either is refused (``RequestError`` names what is wrong)."""

        def change(stored: StoredEndpoint) -> StoredEndpoint:
            names = [d.name for d in stored.spec.deployments]
            changes: dict[str, dict[str, int]] = {}
            try:
                if traffic is not None:
                    changes["traffic"] = check_traffic(traffic, names)
                if mirror is not None:
                    changes["mirror"] = check_mirror(mirror, names)
            except ValueError as exc:
                raise RequestError(f"endpoint {name!r}: {exc}") from None
            return _with(stored, **changes)

        return self.update(name, change)

    def regenerate_key(self, name: str, slot: KeySlot) -> tuple[StoredEndpoint, str]:
        """A fresh ``slot`` key for ``name`` (the other keeps working); its plaintext is
        returned once. An endpoint without keys gets both (the other is not shown)."""
        fresh: list[str] = []

        def change(stored: StoredEndpoint) -> StoredEndpoint:
            fresh.clear()
            keys = stored.keys or EndpointKeys.generate(name).record
            record, key = keys.regenerate(slot)
            fresh.append(key)
            return StoredEndpoint(stored.spec, record, stored.etag)

        stored = self.update(name, change)
        return stored, fresh[0]

    def update(
        self, name: str, change: Callable[[StoredEndpoint], StoredEndpoint]
    ) -> StoredEndpoint:
        """Apply ``change`` to the stored endpoint with an ETag-guarded replace,
        re-reading and re-applying on a conflict (a few times)."""
        for _ in range(_ATTEMPTS):
            current = self.get(name)
            changed = change(current)
            try:
                meta = self._replace(_encode(changed.spec, changed.keys), current.etag)
            except ResourceModifiedError:
                continue
            except ResourceNotFoundError as exc:
                raise NotFoundError(f"endpoint {name!r} was deleted meanwhile") from exc
            return StoredEndpoint(changed.spec, changed.keys, str(meta["etag"]))
        raise UpstreamError(f"endpoint {name!r} kept changing; try again")

    def _replace(self, entity: dict[str, Any], etag: str) -> Mapping[str, Any]:
        try:
            return self._table.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise
        except AzureError as exc:
            raise UpstreamError(
                f"the endpoint config store is unavailable ({type(exc).__name__})"
            ) from exc

    def _ensure_table(self) -> None:
        if self._created:
            return
        try:
            self._table.create_table()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise UpstreamError(
                f"the endpoint config store is unavailable ({type(exc).__name__})"
            ) from exc
        self._created = True


def _with(stored: StoredEndpoint, **changes: Any) -> StoredEndpoint:
    data = stored.spec.model_dump(mode="json")
    data.update(changes)
    try:
        spec = EndpointSpec.model_validate(data)
    except ValidationError as exc:
        raise RequestError(f"endpoint {stored.spec.name!r}: {exc.errors()[0]['msg']}") from None
    return StoredEndpoint(spec, stored.keys, stored.etag)


def _encode(spec: EndpointSpec, keys: EndpointKeys | None) -> dict[str, Any]:
    return {
        "PartitionKey": PARTITION,
        "RowKey": spec.name,
        "spec": spec.model_dump_json(),
        "keys": keys.model_dump_json() if keys is not None else "",
    }


def _decode(name: str, entity: TableEntity) -> StoredEndpoint:
    etag = str(entity.metadata["etag"])
    try:
        spec = EndpointSpec.model_validate_json(entity["spec"])
        raw_keys = entity.get("keys") or ""
        keys = EndpointKeys.model_validate_json(raw_keys) if raw_keys else None
    except (KeyError, ValidationError) as exc:
        raise UpstreamError(
            f"the stored config of endpoint {name!r} is invalid; apply it again"
        ) from exc
    return StoredEndpoint(spec, keys, etag)
