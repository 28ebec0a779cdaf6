"""Helpers for DAG files: cheap, parse-time safe."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dss_airflow.config.loader import get_catalog
from dss_airflow.config.models import INHERIT

if TYPE_CHECKING:
    from airflow.sdk import Param

    from dss_airflow.config.catalog import Catalog


def execution_config_choices(config_dir: str | None = None, project: str | None = None) -> list[str]:
    """``inherit`` then every config the project may use: the enum of a trigger-form dropdown."""
    from dss_airflow.config.resolve import usable_execution_configs

    catalog = get_catalog(config_dir)
    known = project if project and project in catalog.projects else None
    return [INHERIT, *usable_execution_configs(catalog, known)]


def execution_config_param(
    config_dir: str | None = None,
    project: str | None = None,
    *,
    default: str = INHERIT,
    description: str = "Where the tasks run; 'inherit' uses the project's default.",
) -> Param:
    """The trigger form's execution-config dropdown: the configs ``project`` may use, each shown with its
    description (and ``inherit`` with the config it comes to), and in the description the ones it may
    not, with the groups they need — Airflow shows only "is not one of" when a REST trigger names a
    forbidden one, so the form says why beforehand. A string, never null."""
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
    return Param(
        default,
        type="string",
        enum=choices,
        values_display=_config_labels(catalog, project, choices),
        title="Execution configuration",
        description=description,
    )


def _config_labels(catalog: Catalog, project: str | None, choices: list[str]) -> dict[str, str]:
    """``name: description`` for each config, and what ``inherit`` comes to for ``project``."""
    labels = {}
    for name in choices:
        if name == INHERIT:
            labels[name] = _inherit_label(catalog, project)
            continue
        description = catalog.execution_configs[name].description
        labels[name] = f"{name}: {description}" if description else name
    return labels


def _inherit_label(catalog: Catalog, project: str | None) -> str:
    from dss_airflow.config.resolve import select_execution_config

    only = next(iter(catalog.projects)) if len(catalog.projects) == 1 else None
    name = project or catalog.defaults.project or only
    if name is None or name not in catalog.projects:
        return "inherit: the project's default, else the global default"
    config, level = select_execution_config(catalog, name, None)
    return f"inherit: the {level} ({config})"
