"""dss_airflow: Dataiku DSS-style containerized execution for Apache Airflow 3.

``import dss_airflow`` stays cheap (no Airflow, Docker or Kubernetes import): public names are loaded on
first use (PEP 562), so the scheduler parsing DAGs pays only for what a DAG uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
# pyproject.toml's [project.urls] Documentation: Airflow's Providers page links to it.
_DOCUMENTATION_URL = "https://github.com/dss-airflow/dss-airflow#readme"

_LAZY_IMPORTS = {
    "DSSContainerRecipeOperator": "dss_airflow.operators.recipe",
    "DSSRebuildCodeEnvImagesOperator": "dss_airflow.operators.images",
    "DSSSparkOperator": "dss_airflow.operators.spark",
    "DSSTrainModelOperator": "dss_airflow.operators.model",
    "DSSRetrainModelOperator": "dss_airflow.operators.model",
    "DSSEvaluateModelOperator": "dss_airflow.operators.model",
    "DSSPromoteModelOperator": "dss_airflow.operators.model",
    "DSSScoreModelOperator": "dss_airflow.operators.model",
    "DSSNotebookOperator": "dss_airflow.operators.notebook",
    "CodeEnvChangeSensor": "dss_airflow.sensors.code_env",
    "code_env_asset": "dss_airflow.assets",
    "DSSAirflowError": "dss_airflow.errors",
    "ConfigError": "dss_airflow.errors",
    "Catalog": "dss_airflow.config.catalog",
    "get_catalog": "dss_airflow.config.loader",
    "load_catalog": "dss_airflow.config.loader",
    "execution_config_choices": "dss_airflow.dag_helpers",
    "execution_config_param": "dss_airflow.dag_helpers",
}

if TYPE_CHECKING:
    from dss_airflow.assets import code_env_asset
    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.loader import get_catalog, load_catalog
    from dss_airflow.dag_helpers import execution_config_choices, execution_config_param
    from dss_airflow.errors import ConfigError, DSSAirflowError
    from dss_airflow.operators.images import DSSRebuildCodeEnvImagesOperator
    from dss_airflow.operators.model import (
        DSSEvaluateModelOperator,
        DSSPromoteModelOperator,
        DSSRetrainModelOperator,
        DSSScoreModelOperator,
        DSSTrainModelOperator,
    )
    from dss_airflow.operators.notebook import DSSNotebookOperator
    from dss_airflow.operators.recipe import DSSContainerRecipeOperator
    from dss_airflow.operators.spark import DSSSparkOperator
    from dss_airflow.sensors.code_env import CodeEnvChangeSensor

__all__ = [
    "Catalog",
    "CodeEnvChangeSensor",
    "DSSRebuildCodeEnvImagesOperator",
    "code_env_asset",
    "ConfigError",
    "DSSAirflowError",
    "DSSContainerRecipeOperator",
    "DSSSparkOperator",
    "DSSTrainModelOperator",
    "DSSRetrainModelOperator",
    "DSSEvaluateModelOperator",
    "DSSPromoteModelOperator",
    "DSSScoreModelOperator",
    "DSSNotebookOperator",
    "__version__",
    "execution_config_choices",
    "execution_config_param",
    "get_catalog",
    "get_provider_info",
    "load_catalog",
]


def __getattr__(name: str) -> Any:
    module = _LAZY_IMPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dss_airflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def get_provider_info() -> dict[str, Any]:
    """Airflow provider metadata (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "dss-airflow",
        "name": "Dataiku DSS-style containerized execution",
        "description": "Execution configs, code-env images and containerized recipes for Airflow.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "DSS containerized execution",
                "external-doc-url": _DOCUMENTATION_URL,
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": "DSS containerized execution",
                "python-modules": [
                    "dss_airflow.operators.recipe",
                    "dss_airflow.operators.model",
                    "dss_airflow.operators.notebook",
                    "dss_airflow.operators.spark",
                ],
            }
        ],
        "plugins": [{"name": "dss_airflow", "plugin-class": "dss_airflow.plugin.DSSAirflowPlugin"}],
        "config": {
            "dss_airflow": {
                "description": "dss_airflow settings.",
                "options": {
                    "config_dir": {
                        "description": "Directory of the YAML config (execution configs, code envs, ...). "
                        "The DSS_AIRFLOW_CONFIG environment variable wins over it.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/opt/airflow/dss_config",
                        "default": None,
                    },
                    "cache_dir": {
                        "description": "Where local virtualenvs are cached (default ~/.cache/dss-airflow).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/var/cache/dss-airflow",
                        "default": None,
                    },
                    "state_dir": {
                        "description": "Local durable state: the SQLite image ledger (unless state_conn_id "
                        "is set) and notebook servers. The DSS_AIRFLOW_STATE environment variable wins.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/var/lib/dss-airflow",
                        "default": None,
                    },
                    "state_conn_id": {
                        "description": "Airflow connection (PostgreSQL) of the database holding the image "
                        "ledger, build logs and package locks, so that several workers share them. Unset: a "
                        "SQLite file in state_dir (one machine). DSS_AIRFLOW_STATE_CONN_ID wins.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "dss_state",
                        "default": None,
                    },
                    "build_docker_host": {
                        "description": "Docker daemon that builds code-env and base images for configs "
                        "whose daemon does not share the worker's filesystem (and for kubernetes ones); it "
                        "must see this machine's files and reach the package index. "
                        "DSS_AIRFLOW_BUILD_DOCKER_HOST wins over it.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "unix:///var/run/docker.sock",
                        "default": None,
                    },
                },
            }
        },
    }
