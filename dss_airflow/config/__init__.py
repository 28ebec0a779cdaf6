"""Config layer: typed models of the admin's YAML, the loader and the task > project > global resolution."""

from __future__ import annotations

from dss_airflow.config.catalog import Catalog
from dss_airflow.config.loader import get_catalog, load_catalog
from dss_airflow.config.resolve import ResolvedExecution, resolve_execution, resolve_recipe_path
from dss_airflow.errors import InvalidConfigError

__all__ = [
    "Catalog",
    "InvalidConfigError",
    "ResolvedExecution",
    "get_catalog",
    "load_catalog",
    "resolve_execution",
    "resolve_recipe_path",
]
