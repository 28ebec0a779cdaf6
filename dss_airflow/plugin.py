"""Airflow plugin registration (entry point ``airflow.plugins``), so Airflow lists dss_airflow."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class DSSAirflowPlugin(AirflowPlugin):
    """Registers dss_airflow with Airflow; UI views and listeners are added here as they come."""

    name = "dss_airflow"
