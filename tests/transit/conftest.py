"""A real OpenBao with the Transit engine mounted, shared by the Transit tests of one module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.keys.transit.signer import TransitClient
from proxy_devkit.dev_vault import OpenBao, start_openbao


@pytest.fixture(scope="module")
def bao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    server = start_openbao(Path(tmp_path_factory.mktemp("bao")))
    try:
        server.client().sys.enable_secrets_engine("transit")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def transit(bao: OpenBao) -> TransitClient:
    return TransitClient(bao.addr, lambda: bao.root_token)
