"""The weekly retraining DAG through real Airflow (`airflow dags test`), on the local default and on Docker.

A first run on clean data activates its version; a second run on a broken batch (flipped labels) trains a
worse challenger that the holdout comparison refuses, so the active version stays; plots open as images
and predictions name the version that produced them.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import leftover_staging

pytestmark = pytest.mark.airflow
MODEL = "breast-cancer"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def retrain(env: dict[str, str], data_dir: Path, conf: dict[str, object]) -> str:
    run = subprocess.run(
        ["airflow", "dags", "test", "dss_model_retraining", "-c", json.dumps(conf)],
        env={
            **env,
            "DSS_AIRFLOW_DATA_DIR": str(data_dir),
            "DSS_AIRFLOW_STATE": os.environ["DSS_AIRFLOW_STATE"],
            "DSS_AIRFLOW_CACHE": os.environ["DSS_AIRFLOW_CACHE"],
        },
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-8000:]
    return output


def saved_model(data_dir: Path) -> Path:
    return data_dir / "models" / MODEL


def versions(data_dir: Path) -> list[str]:
    return sorted(path.name for path in (saved_model(data_dir) / "versions").iterdir())


def active(data_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((saved_model(data_dir) / "active.json").read_text())
    return data


def assert_plots_open_as_images(version_dir: Path) -> None:
    from PIL import Image

    (evaluation,) = sorted((version_dir / "evaluations").iterdir())
    names = {path.name for path in evaluation.glob("*.png")}
    assert {"roc.png", "precision_recall.png", "confusion_matrix.png", "feature_importance.png"} <= names
    for name in names:
        path = evaluation / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.width >= 300 and image.height >= 200, (name, image.size)
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert 0.5 < metrics["metrics"]["roc_auc"] <= 1.0


def predictions(data_dir: Path) -> list[dict[str, str]]:
    with (data_dir / "scored" / MODEL / "predictions.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_retraining_dag_promotes_a_good_model_and_keeps_it_on_a_bad_batch(airflow_env, tmp_path):
    first = retrain(airflow_env, tmp_path, {})
    assert "chosen by the global default" in first
    (v1,) = versions(tmp_path)
    assert active(tmp_path)["version"] == v1, "the first version becomes active (no champion yet)"
    meta = json.loads((saved_model(tmp_path) / "versions" / v1 / "meta.json").read_text())
    assert meta["code_env"] == "ml" and meta["execution_config"] == "local"
    assert len(meta["data"]["sha256"]) == 64 and meta["features"]
    assert_plots_open_as_images(saved_model(tmp_path) / "versions" / v1)
    rows = predictions(tmp_path)
    assert len(rows) == 171 and {row["model_version"] for row in rows} == {v1}
    assert {row["prediction"] for row in rows} <= {"benign", "malignant"}

    second = retrain(airflow_env, tmp_path, {"label_noise": 0.45})
    assert "flipped" in second
    v1_again, v2 = versions(tmp_path)
    assert v1_again == v1 and v2 > v1, "every training adds a version; none is overwritten"
    assert active(tmp_path)["version"] == v1, "the worse challenger is not promoted"
    assert "not promoted" in second
    assert {row["model_version"] for row in predictions(tmp_path)} == {v1}, "scoring used the champion"
    assert leftover_staging(tmp_path) == [], "no staging directory left behind"


@pytest.mark.docker
def test_retraining_dag_on_docker(airflow_env, tmp_path, base_image, docker_client, monkeypatch):
    from dss_airflow.config.loader import load_catalog
    from dss_airflow.images.service import ImageService

    catalog = load_catalog(Path(airflow_env["DSS_AIRFLOW_CONFIG"]))
    report = ImageService(catalog).build(envs=["ml"], configs=["docker-small"])
    assert report.ok, report
    no_registry = ImageService(catalog).build(envs=["ml"], configs=["k8s-small"])
    (error,) = no_registry.failed.values()
    assert "registry connection 'dss_registry'" in error and "airflow connections add" in error
    output = retrain(airflow_env, tmp_path, {"execution_config": "docker-small", "force_promote": True})
    chosen = "chosen in the trigger form (or run conf): params.execution_config"
    assert f"execution config 'docker-small' (docker; {chosen})" in output
    (version,) = versions(tmp_path)
    meta = json.loads((saved_model(tmp_path) / "versions" / version / "meta.json").read_text())
    assert meta["execution_config"] == "docker-small"
    assert "@sha256:" in meta["image"] or "dss-code-envs:ml-" in meta["image"], meta["image"]
    assert active(tmp_path)["version"] == version
    assert_plots_open_as_images(saved_model(tmp_path) / "versions" / version)
    assert {row["model_version"] for row in predictions(tmp_path)} == {version}
    leftovers = docker_client.containers.list(
        all=True, filters={"label": "dss_airflow.dag_id=dss_model_retraining"}
    )
    assert leftovers == []
