"""Where dss_airflow finds its config: one place, read the same way by the CLI, DAGs and workers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_CONFIG_DIR = "DSS_AIRFLOW_CONFIG"
ENV_CACHE_DIR = "DSS_AIRFLOW_CACHE"
ENV_STATE_DIR = "DSS_AIRFLOW_STATE"
ENV_STATE_CONN_ID = "DSS_AIRFLOW_STATE_CONN_ID"
ENV_BUILD_DOCKER_HOST = "DSS_AIRFLOW_BUILD_DOCKER_HOST"
LOCAL_DOCKER_HOST = "unix:///var/run/docker.sock"


def _airflow_option(key: str) -> str | None:
    """``[dss_airflow] <key>`` from the Airflow config. A process that has not imported Airflow (the CLI)
    reads it where Airflow would rather than import Airflow (~1 s): ``AIRFLOW__DSS_AIRFLOW__<KEY>``, then
    the ``airflow.cfg`` file; the ``_cmd``/``_secret`` forms need Airflow's own config, imported then."""
    if "airflow.configuration" not in sys.modules:
        found = _option_without_airflow(key)
        if found is not _NEEDS_AIRFLOW:
            return found if isinstance(found, str) else None
    try:
        from airflow.configuration import conf
    except ImportError:  # pragma: no cover - airflow is a dependency; kept for the in-container runtime
        return None
    value = conf.get("dss_airflow", key, fallback=None)
    return str(value) if value else None


_NEEDS_AIRFLOW = object()


def _option_without_airflow(key: str) -> str | None | object:
    """The option from the environment or ``airflow.cfg`` ($AIRFLOW_CONFIG, else $AIRFLOW_HOME's), as
    Airflow's config resolves it (environment first; every option of ours defaults to unset)."""
    import configparser

    variable = f"AIRFLOW__DSS_AIRFLOW__{key.upper()}"
    if variable in os.environ:
        return os.environ[variable] or None
    if f"{variable}_CMD" in os.environ or f"{variable}_SECRET" in os.environ:
        return _NEEDS_AIRFLOW
    airflow_home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser()
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(os.environ.get("AIRFLOW_CONFIG") or airflow_home / "airflow.cfg", encoding="utf-8")
    except configparser.Error:
        return _NEEDS_AIRFLOW  # let Airflow report its own config file's problem
    if parser.has_option("dss_airflow", f"{key}_cmd") or parser.has_option("dss_airflow", f"{key}_secret"):
        return _NEEDS_AIRFLOW
    return parser.get("dss_airflow", key, fallback=None) or None


def default_config_dir() -> Path:
    """``$DSS_AIRFLOW_CONFIG`` > ``[dss_airflow] config_dir`` > ``$AIRFLOW_HOME/dss_airflow``."""
    explicit = os.environ.get(ENV_CONFIG_DIR) or _airflow_option("config_dir")
    if explicit:
        return Path(explicit).expanduser().resolve()
    airflow_home = os.environ.get("AIRFLOW_HOME", "~/airflow")
    return (Path(airflow_home).expanduser() / "dss_airflow").resolve()


def cache_dir() -> Path:
    """Where local virtualenvs and other rebuildable state live."""
    explicit = os.environ.get(ENV_CACHE_DIR) or _airflow_option("cache_dir")
    base = Path(explicit) if explicit else Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "dss-airflow"
    return base.expanduser().resolve()


def state_dir() -> Path:
    """Durable local state (the SQLite image ledger unless ``state_conn_id`` is set; notebook servers):
    ``$DSS_AIRFLOW_STATE`` > ``[dss_airflow] state_dir`` > ``$AIRFLOW_HOME/dss_airflow_state``."""
    explicit = os.environ.get(ENV_STATE_DIR) or _airflow_option("state_dir")
    if explicit:
        return Path(explicit).expanduser().resolve()
    airflow_home = os.environ.get("AIRFLOW_HOME", "~/airflow")
    return (Path(airflow_home).expanduser() / "dss_airflow_state").resolve()


def state_conn_id() -> str | None:
    """The Airflow connection of a PostgreSQL database holding the image ledger, so that every worker sees
    what any of them built: ``$DSS_AIRFLOW_STATE_CONN_ID`` > ``[dss_airflow] state_conn_id``; None keeps
    the ledger in SQLite under :func:`state_dir` (one machine)."""
    return os.environ.get(ENV_STATE_CONN_ID) or _airflow_option("state_conn_id")


def build_docker_host() -> str:
    """The daemon that builds images (it must see the worker's files and reach the package index):
    ``$DSS_AIRFLOW_BUILD_DOCKER_HOST`` > ``[dss_airflow] build_docker_host`` > the local socket. Images for
    configs whose daemon does not share the worker's filesystem are built here, then pushed or copied."""
    return os.environ.get(ENV_BUILD_DOCKER_HOST) or _airflow_option("build_docker_host") or LOCAL_DOCKER_HOST
