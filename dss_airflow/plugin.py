"""Airflow plugin registration (entry point ``airflow.plugins``): the admin page.

Airflow imports this module in every process, so it stays cheap: the page's FastAPI app
(:mod:`dss_airflow.ui.app`) is created only when the api-server asks for ``fastapi_apps``; the nav entry
is an external view that shows the app's page in the Airflow UI (an iframe of the same origin, so the
UI's session cookie signs its requests).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from dss_airflow.ui import URL_PREFIX


def _under_base_url(path: str) -> str:
    """``path`` under the path of ``[api] base_url`` (Airflow served below a prefix)."""
    base = urlsplit(conf.get("api", "base_url", fallback="") or "/").path.rstrip("/")
    return f"{base}{path}"


class DSSAirflowPlugin(AirflowPlugin):
    """The admin page: execution configs, code envs and their images, base images, models, notebooks and
    ``config validate``, with Rebuild and promote/rollback actions for users who may trigger DAGs."""

    name = "dss_airflow"
    external_views = [
        {
            "name": "DSS admin",
            "href": _under_base_url(f"{URL_PREFIX}/"),
            "destination": "nav",
            "category": "admin",
            "url_route": "dss-admin",
        }
    ]

    @cached_property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]  # built on first use only
        from dss_airflow.ui.app import create_app

        return [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "dss_airflow admin"}]
