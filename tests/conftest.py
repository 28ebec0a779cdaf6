"""Test-wide settings."""

from __future__ import annotations

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
    monkeypatch.setenv("DSS_AIRFLOW_CACHE", str(shared_cache))
