"""One local cluster (a PostgreSQL database, 3 instances x 2 workers, nginx) for the tests of this folder."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support import assert_no_drift

ROOT = Path(__file__).resolve().parents[2]
# --import-mode=importlib puts no folder on sys.path: the cluster tool and the HTTP helpers by path.
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests/serving"))

import localcluster  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localcluster.Cluster]:
    started = localcluster.up(tmp_path_factory.mktemp("cluster"))
    try:
        yield started
        assert_no_drift(started.env())  # whatever this folder's tests wrote through three instances
    finally:
        localcluster.down(started)


@pytest.fixture(scope="module")
def api_key(cluster: localcluster.Cluster) -> dict[str, str]:
    """A pipeline's credentials, made with `buildstate keys create` against the cluster's database."""
    return {"X-API-Key": cluster.create_key("read", "write", "admin")}
