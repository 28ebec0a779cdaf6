"""What the admin page shows, read from a config and a saved model on disk (dss_airflow/ui/overview.py);
the page itself, in a real api-server and browser, is tests/integration/test_admin_page.py."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import pytest

from dss_airflow.config.loader import load_catalog
from dss_airflow.ui import overview
from tests.helpers import EXAMPLE_CONFIG, write_config

if TYPE_CHECKING:
    from pathlib import Path

V1, V2 = "v20260101T120000Z-00aa", "v20260201T120000Z-00bb"
EVALUATION = "e20260201T120500Z-0c0c"
MODEL_CONFIG = """
defaults: {project: p, data_dir: data}
managed_folders:
  models: {path: models}
projects:
  p: {root: project}
models:
  churn: {task: classification, target: churned, algorithm: random_forest, folder: models, metric: roc_auc}
"""


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture
def saved_model(tmp_path: Path) -> Path:
    """A saved model as the model tasks leave it: two versions, V2 evaluated, the pointer moved twice."""
    write_config(tmp_path, {"c.yaml": MODEL_CONFIG})
    model = tmp_path / "data" / "models" / "churn"
    for version, score in ((V1, 0.81), (V2, 0.86)):
        metrics = {"roc_auc": score, "accuracy": 0.8}
        write_json(model / "versions" / version / "meta.json", {"metric": "roc_auc", "metrics": metrics})
        (model / "versions" / version / "model.joblib").write_bytes(b"")
    evaluation = model / "versions" / V2 / "evaluations" / EVALUATION
    hint = {"text": "better"}
    write_json(evaluation / "metrics.json", {"metrics": {"roc_auc": 0.85}, "decision_hint": hint})
    for plot in ("feature_importance.png", "roc.png", "confusion_matrix.png"):
        (evaluation / plot).write_bytes(b"\x89PNG\r\n\x1a\n")
    write_json(model / "active.json", {"version": V2})
    write_json(model / "history" / "20260101T120001.000000Z-a.json", {"version": V1, "reason": "first"})
    write_json(model / "history" / "20260201T120600.000000Z-b.json", {"version": V2, "reason": "better"})
    return tmp_path


def test_configs_say_where_they_run_who_may_use_them_and_which_connections_are_missing(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", "kubernetes://")
    rows = {row["name"]: row for row in overview.execution_configs(load_catalog(EXAMPLE_CONFIG))}
    assert rows["docker-small"]["resources"] == {"memory": "512m", "cpus": "1.0", "shm_size": "64m"}
    assert rows["docker-small"]["where"] == "dss.yaml:23" and rows["local"]["where"] == ""
    assert rows["docker-gpu"]["projects"] == [] and rows["docker-gpu"]["allowed_groups"] == ["ml-team"]
    assert rows["docker-gpu"]["host"] == "tcp://gpu-host.internal:2376 (TLS); files copied in and out"
    assert rows["k8s-small"]["projects"] == ["demo"]
    assert rows["k8s-small"]["connections"] == [
        {"id": "kubernetes_default", "defined": True},
        {"id": "dss_registry", "defined": False},
    ]
    assert rows["k8s-spark"]["kind"] == "spark" and rows["k8s-spark"]["projects"] == ["demo"]


def test_models_list_versions_newest_first_the_active_one_history_and_plots(saved_model):
    (model,) = overview.models(load_catalog(saved_model))
    assert model["active"] == V2
    assert [v["version"] for v in model["versions"]] == [V2, V1]
    newest = model["versions"][0]
    assert (newest["score"], newest["evaluations"]) == (0.86, 1)
    assert newest["evaluation"] == {
        "id": EVALUATION,
        "metrics": {"roc_auc": 0.85},
        "decision_hint": "better",
        "plots": ["roc.png", "confusion_matrix.png", "feature_importance.png"],
    }
    assert model["versions"][1]["evaluation"] is None
    assert [h["version"] for h in model["history"]] == [V2, V1], "newest pointer move first"


def test_a_plot_is_served_only_by_name(saved_model):
    catalog = load_catalog(saved_model)
    found = overview.plot_file(catalog, "churn", V2, EVALUATION, "roc.png")
    model_dir = saved_model / "data" / "models" / "churn"
    assert found == model_dir / "versions" / V2 / "evaluations" / EVALUATION / "roc.png"
    for model, version, evaluation, plot in (
        ("churn", V2, EVALUATION, "../../../active.json"),
        ("churn", "..", EVALUATION, "roc.png"),
        ("churn", V2, "..", "roc.png"),
        ("other", V2, EVALUATION, "roc.png"),
        ("churn", V1, EVALUATION, "roc.png"),  # no such evaluation
    ):
        with pytest.raises(LookupError):
            overview.plot_file(catalog, model, version, evaluation, plot)


def test_a_failing_source_shows_its_error_in_its_section_only():
    def broken() -> None:
        raise OSError("disk gone")

    assert overview.section(broken) == {"error": "disk gone"}
    assert overview.section(lambda: [1]) == [1]


def test_the_plugin_module_builds_no_app_until_the_api_server_asks():
    import subprocess

    code = (
        "import sys, dss_airflow.plugin as p; "
        "print(sorted(m for m in sys.modules if m.startswith(('fastapi', 'dss_airflow.ui.app')))); "
        "print(p.DSSAirflowPlugin.external_views[0]['href'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "/dss-admin/"]
