"""Test-wide settings."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _operators_called_directly() -> None:
    """Tests call operator.execute() directly, as Airflow's own tests do; silence the nested-call guard."""
    from airflow.sdk.bases.operator import ExecutorSafeguard

    ExecutorSafeguard.test_mode = True


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory):
    """One cache (local venvs, uv downloads) for the session: rebuildable data, shared to save time."""
    return tmp_path_factory.mktemp("dss-cache")


@pytest.fixture(autouse=True)
def _isolated_state(
    tmp_path_factory: pytest.TempPathFactory, shared_cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test gets its own image ledger; nothing touches ~/airflow or ~/.cache."""
    monkeypatch.setenv("DSS_AIRFLOW_STATE", str(tmp_path_factory.mktemp("dss-state")))
    monkeypatch.delenv("DSS_AIRFLOW_STATE_CONN_ID", raising=False)  # SQLite unless a test shares one
    monkeypatch.setenv("DSS_AIRFLOW_CACHE", str(shared_cache))


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL 15 cluster on 127.0.0.1:18432 for the session (tests/services.py). Skipped,
    with the reason, only when not root and the binaries are missing (a failure under CI=true); a cluster
    that cannot be installed or started is a failure."""
    from tests.services import ServiceUnavailable, postgres_cluster, postgres_missing

    try:
        missing = postgres_missing()
    except ServiceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    if missing is not None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"PostgreSQL is required in CI: {missing}", pytrace=False)
        pytest.skip(missing)
    try:
        with postgres_cluster() as cluster:
            yield cluster
    except ServiceUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
