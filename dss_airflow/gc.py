"""``dss-airflow gc``: sweep everything dead tries left, for tasks that never run again.

Each task already sweeps its own DAG/task's leftovers before it starts (:mod:`dss_airflow.leftovers`);
this sweeps every managed folder's staging, this host's run directories and the containers of every
Docker execution config's daemon. Run it from cron or the rebuild DAG on each worker host: owners on
other hosts cannot be checked, so their directories go only once untouched for ``foreign_after_s``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dss_airflow.config.models import DockerExecutionConfig
from dss_airflow.errors import DSSAirflowError
from dss_airflow.leftovers import sweep_containers, sweep_directories
from dss_airflow.publish import STAGING_DIR, staging_root
from dss_airflow.spec import KERNEL_LABEL, LABEL_PREFIX
from dss_airflow.staging import run_dirs, staging_runs

if TYPE_CHECKING:
    from pathlib import Path

    from dss_airflow.config.catalog import Catalog

#: Directories of owners on other hosts are removed once untouched this long (a try never lasts a day
#: without writing its staging; raise it for longer tasks).
FOREIGN_AFTER_S = 24 * 3600


@dataclass
class Swept:
    directories: list[Path] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)


def sweep_all(catalog: Catalog, *, dry_run: bool = False, foreign_after_s: float = FOREIGN_AFTER_S) -> Swept:
    """Remove what dead tries left everywhere this host can see; daemons that do not answer are listed."""
    from dss_airflow.hooks.docker import BUILD_CONTAINER_LABEL, docker_client
    from dss_airflow.settings import build_docker_host

    swept = Swept()
    roots = []
    for name, folder in catalog.managed_folders.items():
        if folder.path is not None:
            path = catalog.folder_path(name)
            roots += [staging_root(path), path / STAGING_DIR]  # and where earlier releases staged
    swept.directories = sweep_directories(
        run_dirs() + staging_runs(roots), foreign_after_s=foreign_after_s, dry_run=dry_run
    )
    daemons: dict[str, tuple[str | None, DockerExecutionConfig | None]] = {build_docker_host(): (None, None)}
    for name, execution_config in sorted(catalog.execution_configs.items()):
        if (
            isinstance(execution_config, DockerExecutionConfig)
            and execution_config.docker_host not in daemons
        ):
            daemons[execution_config.docker_host] = (name, execution_config)
    for docker_host, (config_name, config) in daemons.items():
        try:
            client = docker_client(docker_host, config=config, config_name=config_name)
        except DSSAirflowError as exc:
            swept.unreachable.append(str(exc))
            continue
        with contextlib.closing(client):
            # task containers, notebook kernels, image builds (builder, R lock, smoke test)
            for label in (f"{LABEL_PREFIX}.dag_id", KERNEL_LABEL, BUILD_CONTAINER_LABEL):
                swept.containers += sweep_containers(client, [label], dry_run=dry_run)
    return swept
