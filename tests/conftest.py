"""Test-wide settings."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _operators_called_directly() -> None:
    """Tests call operator.execute() directly, as Airflow's own tests do; silence the nested-call guard."""
    from airflow.sdk.bases.operator import ExecutorSafeguard

    ExecutorSafeguard.test_mode = True
