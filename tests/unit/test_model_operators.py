"""Model definitions and model operators on the worker side: config errors, parse-time checks, the
folders each action reads and writes, and the Kubernetes pods of model tasks (strict schema validation)."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import pytest

from dss_airflow.config.loader import load_catalog
from dss_airflow.errors import ConfigError, InvalidConfigError, UnknownNameError
from dss_airflow.operators.model import (
    DSSEvaluateModelOperator,
    DSSPromoteModelOperator,
    DSSRetrainModelOperator,
    DSSScoreModelOperator,
    DSSTrainModelOperator,
)
from tests.helpers import BASE_CONFIG, EXAMPLE_CONFIG, fake_context, make_project, write_config

if TYPE_CHECKING:
    from pathlib import Path

MODELS = """
    code_envs:
      ml: {packages: [scikit-learn==1.9.1]}
    managed_folders:
      models: {path: models, pvc: data-pvc, sub_path: models}
      ml_data: {path: ml_data, pvc: data-pvc, sub_path: ml_data}
    models:
      churn:
        task: classification
        target: churned
        exclude: [customer_id]
        algorithm: random_forest
        folder: models
        code_env: ml
"""


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    write_config(tmp_path, {"base.yaml": BASE_CONFIG, "ml.yaml": MODELS})
    make_project(tmp_path, {"recipes/r.py": "pass\n"})
    return tmp_path


def load_with(tmp_path: Path, models_yaml: str) -> Any:
    write_config(tmp_path, {"base.yaml": BASE_CONFIG, "ml.yaml": models_yaml})
    return load_catalog(tmp_path)


# ------------------------------------------------------------------------------------ definitions
def test_example_models_load_with_their_decision_metric():
    catalog = load_catalog(EXAMPLE_CONFIG)
    cancer = catalog.models["breast-cancer"]
    assert cancer.decision_metric == "roc_auc"
    assert cancer.for_runtime()["categorical"] == ["clinic"]
    assert "folder" not in cancer.for_runtime(), "worker-side keys stay on the worker"
    assert catalog.models["diabetes-progression"].decision_metric == "rmse"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("algorithm: random_forrest", r"unknown algorithm 'random_forrest'.*did you mean 'random_forest'"),
        ("algorithm: linear_regression", r"unknown algorithm 'linear_regression' for classification"),
        ("metric: r2", r"unknown metric 'r2' for classification.*roc_auc"),
        ("features: [churned, age]", r"target 'churned' cannot also be a feature"),
        ("hyperparameters: {n_estimators: {a: 1}}", r"hyperparameter 'n_estimators'"),
        ("split: {test_size: 1.5}", r"split.test_size"),
        ("tasks: regression", r"unknown key 'tasks'.*Did you mean 'task'"),
    ],
)
def test_bad_definitions_fail_at_load_with_file_line_and_field(tmp_path, change, expected):
    key = change.split(":")[0]
    lines = [line for line in MODELS.splitlines() if not line.strip().startswith(f"{key}:")]
    lines.insert(lines.index("        task: classification") + 1, f"        {change}")
    if key == "tasks":
        lines.remove("        task: classification")
    with pytest.raises(InvalidConfigError) as caught:
        load_with(tmp_path, "\n".join(lines))
    message = str(caught.value)
    assert "ml.yaml:" in message and "models.churn" in message
    assert any(re.search(expected, str(error)) for error in caught.value.errors), message


def test_unknown_folder_of_a_model_suggests_the_closest(tmp_path):
    with pytest.raises(InvalidConfigError, match=r"models.churn.folder.*'model'.*Did you mean 'models'"):
        load_with(tmp_path, MODELS.replace("folder: models", "folder: model"))


# ------------------------------------------------------------------------------------ operators
def test_unknown_model_name_fails_at_parse_time_with_a_suggestion(config_dir):
    with pytest.raises(UnknownNameError, match=r"model 'chrun'.*Did you mean 'churn'"):
        DSSTrainModelOperator(task_id="t", model="chrun", data="ml_data/a.csv", config_dir=str(config_dir))


def test_inline_definition_is_validated_like_the_config(config_dir):
    definition = {"task": "regression", "target": "y", "algorithm": "xgbost", "folder": "models"}
    with pytest.raises(ConfigError, match=r"definition.*unknown algorithm 'xgbost'.*did you mean 'xgboost'"):
        DSSTrainModelOperator(
            task_id="t",
            model="inline",
            definition=definition,
            data="ml_data/a.csv",
            code_env="ml",
            config_dir=str(config_dir),
        )
    definition["algorithm"] = "xgboost"
    definition["folder"] = "modles"
    with pytest.raises(UnknownNameError, match=r"Did you mean 'models'"):
        DSSTrainModelOperator(
            task_id="t",
            model="inline",
            definition=definition,
            data="ml_data/a.csv",
            config_dir=str(config_dir),
        )


@pytest.mark.parametrize(
    ("operator", "kwargs", "expected"),
    [
        (DSSTrainModelOperator, {}, r"data:.*needs its data"),
        (DSSScoreModelOperator, {"data": "ml_data/a.csv"}, r"predictions:.*needs an output"),
        (
            DSSScoreModelOperator,
            {"data": "ml_data/a.csv", "predictions": "raw", "version": "../x"},
            "version",
        ),
        (DSSEvaluateModelOperator, {"data": "ml_data/../../etc/passwd"}, r"escapes its managed folder"),
        (DSSTrainModelOperator, {"data": "ml_data/a.csv", "promotion": "sometimes"}, "promotion"),
        (DSSTrainModelOperator, {"data": "ml_data/a.csv", "model": "Bad/Name"}, "invalid model name"),
    ],
)
def test_bad_arguments_fail_at_parse_time(config_dir, operator, kwargs, expected):
    arguments = {"model": "churn", **kwargs}
    with pytest.raises(ConfigError, match=expected):
        operator(task_id="t", config_dir=str(config_dir), **arguments)


def test_forbidden_execution_config_is_refused_for_model_tasks(config_dir):
    with pytest.raises(ConfigError, match="docker-restricted"):
        DSSTrainModelOperator(
            task_id="t",
            model="churn",
            data="ml_data/a.csv",
            execution_config="docker-restricted",
            config_dir=str(config_dir),
        )


def prepared(operator: Any, config_dir: Path) -> Any:
    """The run-time plan of a model operator's task: its folders and the engine's params."""
    catalog = load_catalog(config_dir)
    task = operator.task()
    resolved = task.resolve(catalog)
    return task.plan(catalog, resolved, fake_context(task_id=operator.task_id)["ti"]), resolved


def test_each_action_reads_and_writes_the_saved_model_folders(config_dir):
    train, resolved = prepared(
        DSSRetrainModelOperator(
            task_id="t", model="churn", data="ml_data/w1.csv", config_dir=str(config_dir)
        ),
        config_dir,
    )
    assert resolved.code_env_name == "ml", "the definition's code env is the task default"
    assert train.inputs == {"models": "models/churn", "data": "ml_data/w1.csv"}
    assert list(train.outputs.items()) == [("versions", "models/churn/versions"), ("pointer", "models/churn")]
    params = train.params
    assert params["action"] == "train" and params["promotion"] == "if_better"
    assert params["definition"]["metric"] == "roc_auc" and params["run"]["code_env"] == "ml"

    promote, _ = prepared(
        DSSPromoteModelOperator(task_id="p", model="churn", force="True", config_dir=str(config_dir)),
        config_dir,
    )
    assert promote.outputs == {"pointer": "models/churn"} and promote.params["force"] is True

    score, _ = prepared(
        DSSScoreModelOperator(
            task_id="s",
            model="churn",
            data="ml_data/new.csv",
            predictions="raw/preds",
            config_dir=str(config_dir),
        ),
        config_dir,
    )
    assert score.outputs == {"predictions": "raw/preds"}, "scoring never writes the saved model"

    evaluate, _ = prepared(
        DSSEvaluateModelOperator(
            task_id="e", model="churn", data="ml_data/h.csv", config_dir=str(config_dir)
        ),
        config_dir,
    )
    assert evaluate.outputs == {"versions": "models/churn/versions"}, "evaluations go next to the version"


def test_templated_booleans_from_the_trigger_form(config_dir):
    operator = DSSPromoteModelOperator(task_id="p", model="churn", force="maybe", config_dir=str(config_dir))
    with pytest.raises(ConfigError, match="force.*not a boolean"):
        prepared(operator, config_dir)


# ------------------------------------------------------------------------------------ kubernetes pods
def test_model_task_pods_pass_strict_validation(config_dir, monkeypatch):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    from kubernetes.client import ApiClient

    from dss_airflow.backends.base import RunOptions
    from dss_airflow.backends.kubernetes import KubernetesBackend
    from dss_airflow.spec import ImageRef
    from dss_airflow.tasks.flow import RunKey, prepare_run

    image = ImageRef("registry.example.com/dss-code-envs@sha256:" + "cd" * 32, "/opt/dss/env/bin/python")
    catalog = load_catalog(config_dir)
    (config_dir / "project").mkdir(exist_ok=True)
    for operator in (
        DSSTrainModelOperator(
            task_id="train", model="churn", data="ml_data/a.csv", config_dir=str(config_dir)
        ),
        DSSEvaluateModelOperator(
            task_id="ev", model="churn", data="ml_data/b.csv", config_dir=str(config_dir)
        ),
        DSSPromoteModelOperator(task_id="promote", model="churn", config_dir=str(config_dir)),
        DSSScoreModelOperator(
            task_id="score",
            model="churn",
            data="ml_data/c.csv",
            predictions="ml_data/out",
            config_dir=str(config_dir),
        ),
    ):
        operator.execution_config = "k8s"
        catalog = _with_project_pvc(catalog)
        labels = {"dss_airflow.dag_id": "ml", "dss_airflow.task_id": operator.task_id}
        ti = fake_context(task_id=operator.task_id)["ti"]
        key = RunKey("r-1", "u", labels)
        run = prepare_run(
            operator.task(), catalog, ti, logging.getLogger(), RunOptions(pinned_image=image), key
        )
        assert isinstance(run.backend, KubernetesBackend)
        pod = run.backend.pod(run.spec)
        manifest = ApiClient().sanitize_for_serialization(pod)
        for version in ("1.36.0", "1.37.0"):
            kubernetes_validate.validate(manifest, version, strict=True)
        env = {item["name"]: item.get("value") for item in manifest["spec"]["containers"][0]["env"]}
        assert '"/opt/dss-airflow/runtime/dss_model.py"' in env["DSS_CONTEXT_JSON"], operator.task_id
        mounts = {
            m["mountPath"]: m.get("readOnly", False)
            for m in manifest["spec"]["containers"][0]["volumeMounts"]
        }
        assert mounts["/dss/in/models"] is True, "the saved model is read-only in the pod"


def _with_project_pvc(catalog: Any) -> Any:
    """BASE_CONFIG's project has no PVC; kubernetes pods need one for the project directory."""
    import dataclasses

    project = catalog.projects["demo"].model_copy(update={"pvc": "projects-pvc"})
    return dataclasses.replace(catalog, projects={**catalog.projects, "demo": project})


def test_k8s_render_of_the_example_model_tasks(monkeypatch):
    """`dss-airflow k8s render` on the retraining DAG's model tasks: strict-valid manifests, XCom-fed
    fields rendered with their defaults and said so."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    import yaml

    from dss_airflow.k8s_render import render_task

    monkeypatch.setenv("DSS_AIRFLOW_CONFIG", str(EXAMPLE_CONFIG))
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", '{"conn_type": "kubernetes"}')
    dags = EXAMPLE_CONFIG.parents[1] / "dags"
    for task_id in ("retrain", "evaluate", "promote", "score"):
        text = render_task("dss_model_retraining", task_id, dags_folder=dags, execution_config="k8s-small")
        if task_id in ("evaluate", "promote"):
            assert (
                "# version: {{ ti.xcom_pull(task_ids='retrain')['version'] }} comes from an upstream" in text
            )
        assert "NOT-BUILT" in text, "no image was built for k8s-small here: a placeholder, said so"
        manifest = yaml.safe_load(text)
        for version in ("1.36.0", "1.37.0"):
            kubernetes_validate.validate(manifest, version, strict=True)
        assert manifest["metadata"]["namespace"] == "dss"
        assert manifest["metadata"]["labels"]["dss-airflow/code-env"] == "ml"
