"""Helpers for DAG files: cheap, parse-time safe."""

from __future__ import annotations

from dss_airflow.config.loader import get_catalog
from dss_airflow.config.models import INHERIT


def execution_config_choices(config_dir: str | None = None, project: str | None = None) -> list[str]:
    """``inherit`` then every config the project may use: the enum of a trigger-form dropdown."""
    catalog = get_catalog(config_dir)
    project_groups = (
        set(catalog.projects[project].groups) if project and project in catalog.projects else None
    )
    usable = [
        name
        for name, config in sorted(catalog.execution_configs.items())
        if project_groups is None or not config.allowed_groups or project_groups & set(config.allowed_groups)
    ]
    return [INHERIT, *usable]
