"""What the admin page shows, as plain JSON-able data, read through the project's own APIs: the catalog
(execution configs, clusters, code envs, base images, models), the image ledger and planner (current and
previous images, stale and why, build logs), the model store (versions, metrics, active pointer and its
history, evaluation plots), notebook servers and kernels, and ``config validate``.

Nothing here writes. Each section is read on its own: a source that fails (a daemon down, a corrupt file)
shows its error in its section and leaves the others.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict
from functools import partial
from typing import TYPE_CHECKING, Any

from dss_airflow.config.models import DockerExecutionConfig, KubernetesExecutionConfig
from dss_airflow.config.quantities import docker_size_text
from dss_airflow.config.spark import KubernetesSparkConfig, LocalSparkConfig
from dss_airflow.errors import DSSAirflowError

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from dss_airflow.config.catalog import Catalog
    from dss_airflow.images.ledger import ImageRecord, Ledger
    from dss_airflow.images.plan import Planner

log = logging.getLogger(__name__)

#: Sections of the catalog whose entries are "configs" on the page, with the kind shown for them.
CONFIG_SECTIONS = {"execution_configs": "execution", "spark_configs": "spark"}
#: Plot files an evaluation writes (runtime/model/plots.py): lower-case names ending in .png.
PLOT_NAME = re.compile(r"^[a-z][a-z_]*\.png$")
#: The order plots are shown in (others after these, by name).
PLOT_ORDER = ("roc.png", "precision_recall.png", "confusion_matrix.png", "residuals.png",
              "predicted_vs_actual.png", "feature_importance.png")  # fmt: skip


def section(read: Callable[[], Any]) -> Any:
    """``read()``, or ``{"error": ...}`` when its source fails, so one broken source leaves the page."""
    try:
        return read()
    except Exception as exc:  # the page's boundary: any failure of one source is shown, not a 500
        log.warning("admin page: a section failed", exc_info=True)
        return {"error": str(exc) or type(exc).__name__}


def overview(catalog: Catalog, open_ledger: Callable[[], Ledger]) -> dict[str, Any]:
    """Every section of the page; the ledger is opened once, for the image sections."""
    from dss_airflow.images.plan import Planner

    planner = section(lambda: Planner(catalog, open_ledger()))
    broken = planner if isinstance(planner, dict) else None  # no ledger: no image section
    return {
        "config_dir": str(catalog.config_dir),
        "execution_configs": section(lambda: execution_configs(catalog)),
        "clusters": section(lambda: clusters(catalog)),
        "code_envs": broken or section(lambda: code_envs(catalog, planner)),
        "base_images": broken or section(lambda: base_images(catalog, planner)),
        "models": section(lambda: models(catalog)),
        "notebook_servers": section(lambda: notebook_servers(catalog)),
        "notebook_kernels": section(lambda: notebook_kernels(catalog)),
        "usage": section(lambda: resource_usage(catalog)),
        "validation": section(validation),
    }


# ---------------------------------------------------------------------------------------- configs
def execution_configs(catalog: Catalog) -> list[dict[str, Any]]:
    """Execution and spark configs: type, where they run, resources, who may use them, connections."""
    rows = []
    for section_name, kind in CONFIG_SECTIONS.items():
        for name, config in sorted(getattr(catalog, section_name).items()):
            rows.append(
                {
                    "name": name,
                    "kind": kind,
                    "type": config.type,
                    "description": config.description,
                    "where": where(catalog, section_name, name),
                    "host": host_of(config),
                    "base_image": getattr(config, "base_image", None),
                    "resources": resources_of(config),
                    "allowed_groups": list(config.allowed_groups),
                    "projects": projects_allowed(catalog, section_name, name),
                    "connections": connections(catalog, section_name, name),
                }
            )
    return rows


def clusters(catalog: Catalog) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "description": cluster.description,
            "where": where(catalog, "clusters", name),
            "host": host_of(cluster),
            "allowed_groups": list(cluster.allowed_groups),
            "projects": projects_allowed(catalog, "clusters", name),
            "connections": connections(catalog, "clusters", name),
        }
        for name, cluster in sorted(catalog.clusters.items())
    ]


def where(catalog: Catalog, *path: str) -> str:
    """``file:line`` where an item was defined, the file relative to the config directory."""
    file, line = catalog.where(*path)
    if line is None and file == str(catalog.config_dir):  # not from a file: the built-in local config
        return ""
    relative = os.path.relpath(file, catalog.config_dir) if file.startswith(str(catalog.config_dir)) else file
    return f"{relative}:{line}" if line else relative


def host_of(config: Any) -> str:
    """Where a config's work runs: the worker, a Docker daemon, or a Kubernetes cluster."""
    if isinstance(config, DockerExecutionConfig):
        shares = "" if config.shares_filesystem else "; files copied in and out"
        return f"{config.docker_host}{' (TLS)' if config.tls_cert_dir else ''}{shares}"
    if isinstance(config, LocalSparkConfig):
        return f"the worker, Spark master {config.master}"
    target = [
        f"{label} {value}"
        for label, value in (
            ("connection", getattr(config, "kubernetes_conn_id", None)),
            ("context", getattr(config, "context", None)),
            ("namespace", getattr(config, "namespace", None)),
        )
        if value
    ]
    return ", ".join(target) or "the worker"


def resources_of(config: Any) -> dict[str, str]:
    if isinstance(config, DockerExecutionConfig):
        limits = config.resources
        found = {"memory": size(limits.memory), "cpus": limits.cpus, "shm_size": size(limits.shm_size)}
        if config.gpus is not None:
            found["gpus"] = config.gpus.count
        if config.runtime:
            found["runtime"] = config.runtime
        return {key: str(value) for key, value in found.items() if value is not None}
    if isinstance(config, KubernetesExecutionConfig):
        pod = config.resources
        return {f"{kind}.{key}": value for kind, quantities in (("requests", pod.requests),
                ("limits", pod.limits)) for key, value in quantities.items()}  # fmt: skip
    if isinstance(config, KubernetesSparkConfig):
        driver, executor = config.driver, config.executor
        return {
            "driver": f"{driver.cores} cores, {driver.memory}",
            "executor": f"{executor.instances} x ({executor.cores} cores, {executor.memory})",
        }
    return {}


def size(value: int | None) -> str | None:
    """Bytes as Docker sizes read: 512m, 2g."""
    return None if value is None else docker_size_text(value)


def projects_allowed(catalog: Catalog, section_name: str, name: str) -> list[str]:
    """The projects that may use the config (the same check as at parse and run time)."""
    from dss_airflow.config.resolve import may_use

    return [
        project
        for project in sorted(catalog.projects)
        if may_use(catalog, name, project, section=section_name)
    ]


def connections(catalog: Catalog, section: str, name: str) -> list[dict[str, Any]]:
    """The Airflow connections a config names (cluster, registry login) and whether each is defined, as
    ``config validate --check-connections`` looks them up."""
    from dss_airflow.cli import connection_type

    return [
        {"id": conn_id, "defined": connection_type(conn_id) is not None}
        for conn_id, _ in catalog.connection_fields(section, name)
    ]


# ------------------------------------------------------------------------------- images and envs
def code_envs(catalog: Catalog, planner: Planner) -> list[dict[str, Any]]:
    """Each env's packages and resolved locks, and per config its image: current, previous, whether it is
    stale and why (the plan of ``images plan``), the last error and build log."""
    from dss_airflow.images.ledger import PairState
    from dss_airflow.images.plan import Target

    plan = {item.target: item for item in planner.plan()}
    rows = []
    for name, env in sorted(catalog.code_envs.items()):
        states = planner.ledger.read(name)
        locks: dict[str, str] = {}
        pairs = []
        for config in sorted({target.config for target in plan if target.env == name} | set(states)):
            state, item = states.get(config, PairState()), plan.get(Target(name, config))
            if state.current is not None:
                lock = planner.ledger.lock_text(state.current.spec_hash)
                if lock is not None:
                    locks[state.current.spec_hash[:12]] = lock
            pairs.append(
                {
                    "config": config,
                    "status": state.status,
                    "plan": item.action if item else "not built for this config any more",
                    "reasons": item.reasons if item else [],
                    "current": image_of(state.current),
                    "previous": [image_of(record) for record in state.previous],
                    "last_error": state.last_error,
                    "last_log": state.last_log,
                    "updated_at": state.updated_at,
                }
            )
        rows.append(
            {
                "name": name,
                "description": env.description,
                "python": env.python,
                "managed": env.managed,
                "notebook": env.notebook,
                "packages": catalog.requirements(name),
                "r_packages": list(env.r_packages),
                "build_for": env.build_for,
                "locks": locks,
                "images": pairs,
            }
        )
    return rows


def image_of(record: ImageRecord | None) -> dict[str, str] | None:
    if record is None:
        return None
    return {"image": record.image, "built_at": record.built_at, "build_hash": record.build_hash[:12]}


def build_log(ledger: Ledger, env: str, config: str) -> str | None:
    """The last build log of an (env, config) pair, from the ledger (``images log``)."""
    state = ledger.pair(env, config)
    return ledger.log(state.last_log) if state.last_log else None


def base_images(catalog: Catalog, planner: Planner) -> list[dict[str, Any]]:
    """Each base image: how it is made, the configs built on it, and its digest on their daemons."""
    rows = []
    for name, base in sorted(catalog.base_images.items()):
        users = sorted(
            config
            for section_name in CONFIG_SECTIONS
            for config, item in getattr(catalog, section_name).items()
            if getattr(item, "base_image", None) == name
        )
        if base.bootstrap is not None:
            source = f"bootstrap {base.bootstrap.suite} (air-gapped)"
        else:
            source = f"from {base.from_image}" if base.from_image else "referenced (built elsewhere)"
        rows.append(
            {
                "name": name,
                "image": base.image,
                "description": base.description,
                "source": source,
                "r": base.r,
                "cuda": base.cuda,
                "used_by": users,
                "digest": section(partial(planner.build_daemon_digest, base.image)),
                "digests": {config: section(partial(planner.base_digest, config)) for config in users},
            }
        )
    return rows


# ----------------------------------------------------------------------------------------- models
def models(catalog: Catalog) -> list[dict[str, Any]]:
    """The catalog's models: versions newest first with their metrics, the active one, the pointer's
    history, and the newest evaluation of each version (metrics and plot names)."""
    from dss_airflow.runtime.model.store import active_version, list_versions

    rows = []
    for name, definition in sorted(catalog.models.items()):
        row: dict[str, Any] = {
            "name": name,
            "description": definition.description,
            "task": definition.task,
            "algorithm": definition.algorithm,
            "metric": definition.metric,
            "folder": definition.folder,
        }
        try:
            model_dir = model_dir_of(catalog, name)
        except DSSAirflowError as exc:  # e.g. a folder on a PVC only: not readable from here
            rows.append({**row, "error": str(exc)})
            continue
        newest_first = reversed(list_versions(str(model_dir)))
        rows.append(
            {
                **row,
                "path": str(model_dir),
                "active": active_version(str(model_dir)),
                "versions": [version_of(model_dir, version) for version in newest_first],
                "history": [
                    read_json(path) for path in sorted((model_dir / "history").glob("*.json"), reverse=True)
                ],
            }
        )
    return rows


def model_dir_of(catalog: Catalog, model: str) -> Path:
    """``<folder>/<model>``, the saved model's directory (see tasks/model.py)."""
    definition = catalog.lookup("models", model)
    return catalog.folder_path(definition.folder) / model


def version_of(model_dir: Path, version: str) -> dict[str, Any]:
    """A version's metrics (and its score on its own metric) and its newest evaluation."""
    from dss_airflow.runtime.model.common import EVALUATION_PATTERN

    directory = model_dir / "versions" / version
    meta = read_json(directory / "meta.json")
    evaluations = sorted(
        path.name for path in (directory / "evaluations").glob("*") if EVALUATION_PATTERN.match(path.name)
    )
    newest = None
    if evaluations:
        evaluation = directory / "evaluations" / evaluations[-1]
        record = read_json(evaluation / "metrics.json") if (evaluation / "metrics.json").is_file() else {}
        newest = {
            "id": evaluations[-1],
            "metrics": record.get("metrics", {}),
            "decision_hint": (record.get("decision_hint") or {}).get("text"),
            "plots": sorted(
                (path.name for path in evaluation.glob("*.png") if PLOT_NAME.match(path.name)),
                key=lambda name: (PLOT_ORDER.index(name) if name in PLOT_ORDER else len(PLOT_ORDER), name),
            ),
        }
    metrics = meta.get("metrics", {})
    return {
        "version": version,
        "created_at": meta.get("created_at"),
        "metric": meta.get("metric"),
        "score": metrics.get(meta.get("metric")),
        "metrics": metrics,
        "code_env": meta.get("code_env"),
        "execution_config": meta.get("execution_config"),
        "evaluations": len(evaluations),
        "evaluation": newest,
    }


def plot_file(catalog: Catalog, model: str, version: str, evaluation: str, plot: str) -> Path:
    """An evaluation's plot file, after checking each part is a name (never a path); LookupError if not."""
    from dss_airflow.runtime.model.common import EVALUATION_PATTERN, VERSION_PATTERN

    if model not in catalog.models:
        raise LookupError(f"no model {model!r}")
    for pattern, value in ((VERSION_PATTERN, version), (EVALUATION_PATTERN, evaluation), (PLOT_NAME, plot)):
        if not pattern.match(value):
            raise LookupError(f"not a plot: {value!r}")
    path = model_dir_of(catalog, model) / "versions" / version / "evaluations" / evaluation / plot
    if not path.is_file():
        raise LookupError(f"no plot {plot} in evaluation {evaluation} of {model} {version}")
    return path


def read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {"value": data}


# ------------------------------------------------------------------------------- notebooks, config
def notebook_servers(catalog: Catalog) -> list[dict[str, Any]]:
    """JupyterLab servers started from this host's state directory (``notebook list``)."""
    from dss_airflow.notebook_server import list_servers

    return list_servers(catalog)


def notebook_kernels(catalog: Catalog) -> list[dict[str, str]]:
    """Kernel containers on the local Docker daemons, whoever started them."""
    from dss_airflow.notebook_kernels import running

    return running(catalog)


#: The period the page's resource-usage section covers (`dss-airflow usage --since 7d`).
USAGE_DAYS = 7


def resource_usage(catalog: Catalog) -> dict[str, Any]:
    """What recent DSS runs used per (DAG, task, execution config), with advice: ``dss-airflow usage``'s
    table, from the tasks' XComs in Airflow's database (the api-server's own)."""
    from datetime import UTC, datetime, timedelta

    from dss_airflow.usage_report import HEADERS, read_recorded_runs, summarise, table_row

    runs = read_recorded_runs(None, datetime.now(UTC) - timedelta(days=USAGE_DAYS))
    summaries = summarise(runs, catalog)
    return {
        "days": USAGE_DAYS,
        "headers": list(HEADERS),
        "rows": [
            {"cells": list(table_row(summary)), "level": summary.advice.level if summary.advice else None}
            for summary in summaries
        ],
    }


def validation() -> dict[str, Any]:
    """``dss-airflow config validate`` of the configured directory."""
    from dss_airflow.cli import config_validation

    return asdict(config_validation())
