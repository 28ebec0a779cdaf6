"""The catalog: everything the admin configured, validated, with where each item was written.

Built by :mod:`dss_airflow.config.loader` from a YAML directory; read by every layer above (resolution,
task kinds, images, the CLI). Frozen, so one catalog can be shared by every task of a process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from dss_airflow.config.ml import ModelDefinition
from dss_airflow.config.models import (
    EXECUTION_CONFIG_TYPES,
    BaseImage,
    Cluster,
    CodeEnv,
    Defaults,
    ExecutionConfig,
    LocalExecutionConfig,
    ManagedFolder,
    Project,
)
from dss_airflow.config.notebook import with_notebook_packages
from dss_airflow.config.requirements import read_requirements_file
from dss_airflow.config.spark import SPARK_CONFIG_TYPES, SparkConfig
from dss_airflow.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Iterable, Mapping

    from pydantic import BaseModel

SECTIONS: dict[str, type[BaseModel] | None] = {
    "execution_configs": None,  # chosen by each entry's `type`
    "code_envs": CodeEnv,
    "base_images": BaseImage,
    "managed_folders": ManagedFolder,
    "projects": Project,
    "spark_configs": None,  # chosen by each entry's `type`
    "clusters": Cluster,
    "models": ModelDefinition,
    "defaults": Defaults,
}
SECTION_KINDS = {
    "execution_configs": "execution config",
    "code_envs": "code env",
    "base_images": "base image",
    "managed_folders": "managed folder",
    "projects": "project",
    "spark_configs": "spark config",
    "clusters": "cluster",
    "models": "model",
}
#: Sections whose entries pick their model with a `type` key.
TYPED_SECTIONS: dict[str, Mapping[str, type[BaseModel]]] = {
    "execution_configs": EXECUTION_CONFIG_TYPES,
    "spark_configs": SPARK_CONFIG_TYPES,
}
#: Fields naming an Airflow connection, per section (their lines are kept: `config validate
#: --check-connections` says where each missing one is named).
CONNECTION_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "execution_configs": (("kubernetes_conn_id",), ("registry", "connection_id")),
    "spark_configs": (("kubernetes_conn_id",), ("registry", "connection_id")),
    "clusters": (("kubernetes_conn_id",),),
}
#: Always available, so that a machine with no config and no container engine can still run recipes.
BUILTIN_LOCAL = LocalExecutionConfig(type="local", description="Built-in: a virtualenv on the worker")

Location = tuple[str, int | None]
#: Overrides ``defaults.data_dir`` (a worker whose data lives elsewhere).
DATA_DIR_ENV = "DSS_AIRFLOW_DATA_DIR"
T = TypeVar("T")


@dataclass(frozen=True)
class Catalog:
    """Everything the admin configured, validated, with where each item was defined."""

    config_dir: Path
    execution_configs: Mapping[str, ExecutionConfig]
    code_envs: Mapping[str, CodeEnv]
    base_images: Mapping[str, BaseImage]
    managed_folders: Mapping[str, ManagedFolder]
    projects: Mapping[str, Project]
    defaults: Defaults
    spark_configs: Mapping[str, SparkConfig] = field(default_factory=dict)
    clusters: Mapping[str, Cluster] = field(default_factory=dict)
    models: Mapping[str, ModelDefinition] = field(default_factory=dict)
    locations: Mapping[tuple[str, ...], Location] = field(default_factory=dict, repr=False)
    #: What the catalog was read from (YAML and requirements files, the directories searched) and their
    #: :func:`fingerprint` at load: the cache compares them to decide whether to load again.
    sources: tuple[Path, ...] = ()
    fingerprint: tuple[tuple[int, int], ...] = ()
    #: Not errors, but likely mistakes (an empty file): printed by `config validate`, logged at load.
    warnings: tuple[str, ...] = ()
    _checks: dict[Hashable, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def where(self, *path: str) -> Location:
        """(file, line) where a config item (or its nearest defined parent) was written."""
        key = tuple(path)
        while key:
            if key in self.locations:
                return self.locations[key]
            key = key[:-1]
        return (str(self.config_dir), None)

    def checked(self, key: Hashable, check: Callable[[], T]) -> T:
        """``check()`` once per ``key`` for this catalog (a new catalog starts afresh). Parse-time checks
        of tasks that differ only in what the check does not read share one result; a check that raises
        is not remembered."""
        key = (key, os.environ.get(DATA_DIR_ENV))  # folder checks read the override
        try:
            return cast("T", self._checks[key])
        except KeyError:
            result = self._checks[key] = check()
            return result

    def connection_fields(self, section: str, name: str) -> list[tuple[str, tuple[str, ...]]]:
        """(connection id, field path) of each Airflow connection one item of ``section`` names."""
        found = []
        for path in CONNECTION_FIELDS.get(section, ()):
            value = getattr(self, section)[name]
            for key in path:
                value = getattr(value, key, None)
            if isinstance(value, str):
                found.append((value, path))
        return found

    def named_connections(self) -> list[tuple[str, str, Location]]:
        """(connection id, field path, where written) of every Airflow connection the YAML names."""
        return [
            (conn_id, ".".join((section, name, *path)), self.where(section, name, *path))
            for section in CONNECTION_FIELDS
            for name in sorted(getattr(self, section))
            for conn_id, path in self.connection_fields(section, name)
        ]

    def lookup(self, section: str, name: str, *, field: str | None = None) -> Any:
        """An item by name, or an UnknownNameError listing the names and suggesting the closest."""
        items: Mapping[str, Any] = getattr(self, section)
        if name not in items:
            raise UnknownNameError(SECTION_KINDS[section], name, items, field=field)
        return items[name]

    @property
    def data_dir(self) -> Path:
        override = os.environ.get(DATA_DIR_ENV)
        return resolve_path(self.config_dir, override or self.defaults.data_dir)

    @property
    def allowed_roots(self) -> list[Path]:
        """``defaults.allowed_roots``, resolved against the config directory."""
        return [resolve_path(self.config_dir, root) for root in self.defaults.allowed_roots]

    def folder_path(self, name: str) -> Path:
        """Host directory of a managed folder (local and docker backends)."""
        folder: ManagedFolder = self.lookup("managed_folders", name)
        if folder.path is None:
            file, line = self.where("managed_folders", name)
            raise ConfigError(
                "this managed folder has no host path, so local and docker configs cannot mount it",
                file=file,
                line=line,
                field=f"managed_folders.{name}.path",
                fix="add a 'path' (a host directory) next to its 'pvc'",
            )
        data_dir = self.data_dir
        path = resolve_path(data_dir, folder.path)
        if escapes(path, [data_dir, *self.allowed_roots]):
            file, line = self.where("managed_folders", name)
            raise ConfigError(
                "path leads outside data_dir through a symbolic link",
                file=file,
                line=line,
                field=f"managed_folders.{name}.path",
                value=str(path.resolve()),
                fix=f"keep it inside {data_dir}, or list it (or a parent) in defaults.allowed_roots",
            )
        return path

    def project_root(self, name: str) -> Path:
        project: Project = self.lookup("projects", name)
        return resolve_path(self.config_dir, project.root)

    def requirements(self, env_name: str) -> list[str]:
        """The env's full package list: inline packages, the requirements file's lines, then the notebook
        packages (``notebook: true``) it does not pin itself."""
        env: CodeEnv = self.lookup("code_envs", env_name)
        lines = list(env.packages)
        if env.requirements_file:
            lines += read_requirements_file(resolve_path(self.config_dir, env.requirements_file))
        return with_notebook_packages(lines) if env.notebook else lines


def escapes(path: Path, roots: Iterable[Path]) -> bool:
    """True when ``path``, symbolic links followed, lies inside none of ``roots`` (checked when a task
    is about to use it; the config check is lexical)."""
    real = path.resolve()
    return not any(real.is_relative_to(root.resolve()) for root in roots)


def _expanded(value: str) -> str:
    return os.path.expandvars(os.path.expanduser(value))


def lexical_path(base: Path, value: str) -> str:
    """``value`` against ``base`` (an absolute value stands alone), ``..`` folded, as a string: no disk
    access and no Path objects, so a config check of 50k folders takes milliseconds."""
    return os.path.normpath(os.path.join(base, _expanded(value)))


def resolve_path(base: Path, value: str) -> Path:
    path = Path(_expanded(value))
    return path if path.is_absolute() else (base / path).resolve()


def config_files(config_dir: Path) -> tuple[list[Path], list[Path]]:
    """The YAML files below ``config_dir`` and the directories searched for them. Hidden directories
    (``.git``, ``.dss-staging``, retired output versions) are not config and are not searched."""
    files: list[Path] = []
    directories: list[Path] = []
    for directory, subdirs, names in os.walk(config_dir):
        subdirs[:] = sorted(name for name in subdirs if not name.startswith(".") and name != "__pycache__")
        directories.append(Path(directory))
        files += (Path(directory, name) for name in names if name.endswith((".yaml", ".yml")))
    return sorted(path for path in files if path.is_file()), directories


def fingerprint(sources: Iterable[Path]) -> tuple[tuple[int, int], ...]:
    """Change detector over the files a catalog was read from and the directories searched for them:
    sizes and mtimes (a file added to or removed from a directory changes the directory's mtime). One
    stat call per source, so a DAG file checking 1,000 tasks does not walk the config directory 1,000
    times."""
    stamps = []
    for path in sources:
        try:
            stat = os.stat(path)
            stamps.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            stamps.append((-1, -1))
    return tuple(stamps)
