"""Resolution: which execution config, code env and project a task uses, and whether it may.

Selection order, as in DSS: the task's own value (operator argument, or a DAG param rendered into it from a
UI trigger's run conf) > the project's default > the global default. ``inherit`` (or no value) passes to the
next level; ``none`` and ``local`` both mean the built-in local execution. The same function runs at DAG
parse time (for names that are not templated) and again at execute time, so a run conf cannot bypass
permissions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from dss_airflow.config.catalog import SECTION_KINDS
from dss_airflow.config.models import (
    INHERIT,
    LOCAL,
    NONE_ALIASES,
    Cluster,
    CodeEnv,
    ExecutionConfig,
    KubernetesExecutionConfig,
    Project,
)
from dss_airflow.errors import ConfigError, PermissionDeniedError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.spark import SparkConfig

RECIPE_LANGUAGES = {".py": "python", ".r": "r", ".R": "r"}
#: ``ResolvedExecution.selected_by`` when the task's own value chose the config (how it was set —
#: argument, trigger form, param default — is known only to the operator: ``tasks.flow.task_value_origin``).
TASK_LEVEL = "task"


@dataclass(frozen=True)
class ProjectFileKind:
    """A kind of project file a task runs (recipe, notebook): its operator field, suffixes, description."""

    field: str
    languages: Mapping[str, str]
    description: str


RECIPE = ProjectFileKind("recipe", RECIPE_LANGUAGES, "a Python (.py) or R (.R) file")
NOTEBOOK = ProjectFileKind("notebook", {".ipynb": "python"}, "a Jupyter notebook (.ipynb)")


@dataclass(frozen=True)
class ResolvedExecution:
    """What a task runs with, and why (``selected_by`` names the level that chose the config)."""

    project_name: str
    project: Project
    project_root: Path
    execution_config_name: str
    execution_config: ExecutionConfig
    selected_by: str
    code_env_name: str
    code_env: CodeEnv
    #: The cluster (kubernetes configs only) whose connection/context replaced the config's, if any.
    cluster_name: str | None = None
    #: Spark jobs: the spark config they run on (a kubernetes one chooses the Spark backend).
    spark_config_name: str | None = None
    spark_config: SparkConfig | None = None


def is_templated(value: object) -> bool:
    """True when a value (or any string inside a list/dict) is Jinja that Airflow renders at run time."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(is_templated(key) or is_templated(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(is_templated(item) for item in value)
    return False


def select_project(catalog: Catalog, project: str | None) -> str:
    name = project or catalog.defaults.project
    if name is None:
        if len(catalog.projects) == 1:
            return next(iter(catalog.projects))
        raise ConfigError(
            "no project given and no default project",
            field="project",
            fix="pass project=... to the operator or set defaults.project in the config"
            + (f" (projects: {', '.join(sorted(catalog.projects))})" if catalog.projects else ""),
        )
    catalog.lookup("projects", name, field="project")
    return name


def select_execution_config(catalog: Catalog, project_name: str, task_value: str | None) -> tuple[str, str]:
    """(config name, the level that chose it)."""
    project: Project = catalog.projects[project_name]
    for value, level in (
        (task_value, TASK_LEVEL),
        (project.default_execution_config, f"project {project_name!r} default"),
        (catalog.defaults.execution_config, "global default"),
    ):
        if value is None or value == INHERIT:
            continue
        name = LOCAL if value in NONE_ALIASES else value
        catalog.lookup("execution_configs", name, field="execution_config")
        return name, level
    return LOCAL, "built-in default"


def may_use(
    catalog: Catalog, config_name: str, project_name: str | None, *, section: str = "execution_configs"
) -> bool:
    """A config with allowed_groups (execution or spark) is usable only by projects sharing a group;
    ``project_name`` None (no project known) can use every config."""
    configs: Mapping[str, Any] = getattr(catalog, section)
    groups = configs[config_name].allowed_groups
    if not groups or project_name is None:
        return True
    return bool(set(groups) & set(catalog.projects[project_name].groups))


def usable_execution_configs(catalog: Catalog, project_name: str | None) -> list[str]:
    """The execution configs ``project_name`` may use, by name (every one when it is None)."""
    return [name for name in sorted(catalog.execution_configs) if may_use(catalog, name, project_name)]


def check_permission(
    catalog: Catalog, config_name: str, project_name: str, *, section: str = "execution_configs"
) -> None:
    """Raise when :func:`may_use` says no, naming the groups and the fix."""
    if may_use(catalog, config_name, project_name, section=section):
        return
    configs: Mapping[str, Any] = getattr(catalog, section)
    config = configs[config_name]
    project: Project = catalog.projects[project_name]
    kind = SECTION_KINDS[section]
    file, line = catalog.where(section, config_name, "allowed_groups")
    raise PermissionDeniedError(
        f"project {project_name!r} (groups: {', '.join(project.groups) or 'none'}) may not use {kind} "
        f"{config_name!r}, which is restricted to groups {', '.join(config.allowed_groups)}",
        file=file,
        line=line,
        field=f"{section}.{config_name}.allowed_groups",
        fix=f"choose another {kind}, or have an admin add one of these groups to project "
        f"{project_name!r} or add the project's group to the config's allowed_groups",
    )


def check_env_fits_config(catalog: Catalog, env_name: str, config_name: str) -> None:
    """DSS limitations: only managed envs without extra PYTHONPATH run in containers; build_for must match."""
    config = catalog.execution_configs[config_name]
    env: CodeEnv = catalog.code_envs[env_name]
    if not config.is_container:
        return
    file, line = catalog.where("code_envs", env_name)
    if not env.managed:
        raise ConfigError(
            f"code env {env_name!r} is not managed (external_path {env.external_path}), so it cannot run in "
            f"container execution config {config_name!r}",
            file=file,
            line=line,
            field=f"code_envs.{env_name}.managed",
            fix="use a managed code env (a package list) for containers, or run this task with "
            "execution_config='local'",
        )
    if env.pythonpath:
        raise ConfigError(
            f"code env {env_name!r} adds PYTHONPATH entries, which do not exist inside containers, so it "
            f"cannot run in container execution config {config_name!r}",
            file=file,
            line=line,
            field=f"code_envs.{env_name}.pythonpath",
            value=env.pythonpath,
            fix="package that code (or put it in the project's lib/ directory) and remove pythonpath",
        )
    if not env.builds_for(config_name):
        raise ConfigError(
            f"code env {env_name!r} is not built for execution config {config_name!r}",
            file=file,
            line=line,
            field=f"code_envs.{env_name}.build_for",
            value=env.build_for,
            fix=f"add {config_name!r} to build_for (or set build_for: all) and rebuild its images",
        )


def select_cluster(catalog: Catalog, project_name: str, task_value: str | None) -> str | None:
    """The cluster ("where"), task > project default > global default; None keeps the config's own."""
    project: Project = catalog.projects[project_name]
    for value in (task_value, project.default_cluster, catalog.defaults.cluster):
        if value is None or value == INHERIT:
            continue
        catalog.lookup("clusters", value, field="cluster")
        return value
    return None


def _on_cluster(config: ExecutionConfig, cluster: Cluster) -> ExecutionConfig:
    """A kubernetes config aimed at another cluster: connection, context (and namespace) replaced."""
    update: dict[str, Any] = {"kubernetes_conn_id": cluster.kubernetes_conn_id, "context": cluster.context}
    if cluster.namespace:
        update["namespace"] = cluster.namespace
    return config.model_copy(update=update)


def resolve_execution(
    catalog: Catalog,
    *,
    project: str | None,
    execution_config: str | None,
    code_env: str | None,
    cluster: str | None = None,
) -> ResolvedExecution:
    """Choose and check project, execution config and code env; raises a ConfigError on any problem."""
    project_name = select_project(catalog, project)
    project_model: Project = catalog.projects[project_name]
    config_name, selected_by = select_execution_config(catalog, project_name, execution_config)
    check_permission(catalog, config_name, project_name)
    env_name = code_env or project_model.default_code_env or catalog.defaults.code_env
    if env_name is None:
        raise ConfigError(
            "no code env given and no default",
            field="code_env",
            fix="pass code_env=... to the operator, or set default_code_env on the project or "
            "code_env in defaults",
        )
    catalog.lookup("code_envs", env_name, field="code_env")
    check_env_fits_config(catalog, env_name, config_name)
    config = catalog.execution_configs[config_name]
    cluster_name = None
    if isinstance(config, KubernetesExecutionConfig):
        cluster_name = select_cluster(catalog, project_name, cluster)
        if cluster_name is not None:
            check_permission(catalog, cluster_name, project_name, section="clusters")
            config = _on_cluster(config, catalog.clusters[cluster_name])
    return ResolvedExecution(
        project_name=project_name,
        project=project_model,
        project_root=catalog.project_root(project_name),
        execution_config_name=config_name,
        execution_config=config,
        selected_by=selected_by,
        code_env_name=env_name,
        code_env=catalog.code_envs[env_name],
        cluster_name=cluster_name,
    )


def resolve_recipe_path(
    project_root: Path, recipe: str, kind: ProjectFileKind = RECIPE
) -> tuple[Path, PurePosixPath, str]:
    """(absolute path, path relative to the project root, language) of a recipe (or notebook, with
    ``kind=NOTEBOOK``) inside its project.

    Refuses absolute paths, ``..`` and symlinks that lead outside the project, so a DAG cannot run (or
    mount) arbitrary files of the worker.
    """
    relative = PurePosixPath(recipe)
    if relative.is_absolute() or ".." in relative.parts or "\\" in recipe:
        raise ConfigError(
            f"{kind.field} path escapes the project directory",
            field=kind.field,
            value=recipe,
            fix=f"give a path relative to the project root {project_root}, without '..'",
        )
    language = kind.languages.get(relative.suffix)
    if language is None:
        raise ConfigError(
            f"{kind.field} must be {kind.description}",
            field=kind.field,
            value=recipe,
            fix="rename the file or point at the script",
        )
    path = (project_root / relative).resolve()
    if not path.is_relative_to(project_root.resolve()):
        raise ConfigError(
            f"{kind.field} path escapes the project directory through a symbolic link",
            field=kind.field,
            value=recipe,
            fix=f"keep {kind.field}s inside the project directory",
        )
    if not path.is_file():
        raise ConfigError(
            f"{kind.field} not found",
            field=kind.field,
            value=recipe,
            fix=f"paths are relative to the project root {project_root}",
        )
    return path, relative, language


def require_notebook_support(catalog: Catalog, env_name: str, *, what: str) -> None:
    """A notebook task or server needs a kernel in its env: refuse, where the env is defined, if not."""
    if catalog.lookup("code_envs", env_name, field="code_env").notebook:
        return
    file, line = catalog.where("code_envs", env_name)
    raise ConfigError(
        f"code env {env_name!r} has no notebook support, which {what} needs (papermill, ipykernel)",
        file=file,
        line=line,
        field=f"code_envs.{env_name}.notebook",
        fix=f"set 'notebook: true' under code_envs.{env_name} and rebuild its images "
        f"(dss-airflow images build {env_name}), or choose a code env that has it",
    )
