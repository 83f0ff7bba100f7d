"""Integration fixtures: a real Azurite for the whole session.

``azurite`` is shared by every integration test module: it yields an ``AzuriteProcess``
whose ``connection_string`` points at blob, queue and table services on free ports of
127.0.0.1. Tests that use it must name their queues and containers so they do not collide
with other modules'.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.localhost.azurite import AzuriteProcess, find_azurite_binary


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteProcess]:
    """A running Azurite (skips the test when node_modules/.bin/azurite is missing)."""
    binary = find_azurite_binary()
    if binary is None:
        pytest.skip("node_modules/.bin/azurite is missing; run `npm install` first")
    process = AzuriteProcess(tmp_path_factory.mktemp("azurite"), binary=binary)
    process.start()
    try:
        yield process
    finally:
        process.stop()
