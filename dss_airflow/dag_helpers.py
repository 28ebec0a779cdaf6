"""Helpers for DAG files: cheap, parse-time safe."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dss_airflow.config.loader import get_catalog
from dss_airflow.config.models import INHERIT

if TYPE_CHECKING:
    from airflow.sdk import Param


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


def execution_config_param(
    config_dir: str | None = None,
    project: str | None = None,
    *,
    default: str = INHERIT,
    description: str = "Where the tasks run; 'inherit' uses the project's default.",
) -> Param:
    """The trigger form's execution-config dropdown: the configs ``project`` may use, and in the
    description the ones it may not, with the groups they need — Airflow shows only "is not one of" when
    a REST trigger names a forbidden one, so the form says why beforehand."""
    from airflow.sdk import Param

    catalog = get_catalog(config_dir)
    choices = execution_config_choices(config_dir, project)
    restricted = [
        f"{name} (groups {', '.join(config.allowed_groups)})"
        for name, config in sorted(catalog.execution_configs.items())
        if name not in choices
    ]
    if restricted:
        description += f" Not available to project {project!r}: " + "; ".join(restricted) + "."
    return Param(default, enum=choices, title="Execution configuration", description=description)
