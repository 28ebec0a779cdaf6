"""Model operators end to end on the built-in local config (the code env's virtualenv, a real subprocess):
bad data is refused before any fitting with a clear message, and a failed training leaves the saved model
(its versions and its active pointer) exactly as it was."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import yaml

from dss_airflow.errors import ExecutionError
from dss_airflow.operators.model import DSSScoreModelOperator, DSSTrainModelOperator
from tests.helpers import EXAMPLE_CONFIG, fake_context, leftover_staging, write_config

if TYPE_CHECKING:
    from pathlib import Path

MODELS = """
    defaults: {project: lab, data_dir: data}
    managed_folders:
      data: {path: data}
      models: {path: models}
      scored: {path: scored}
    projects:
      lab: {root: project}
    models:
      cancer:
        task: classification
        target: diagnosis
        algorithm: logistic_regression
        hyperparameters: {max_iter: 500}
        folder: models
        code_env: ml
"""


@pytest.fixture
def lab(tmp_path: Path) -> Path:
    """A config with the example's `ml` env (same packages, so the session's cached venv) and data."""
    from sklearn.datasets import load_breast_cancer

    ml_env = yaml.safe_load((EXAMPLE_CONFIG / "ml.yaml").read_text())["code_envs"]["ml"]
    ml_env.pop("build_for")
    write_config(tmp_path, {"models.yaml": MODELS, "env.yaml": yaml.safe_dump({"code_envs": {"ml": ml_env}})})
    (tmp_path / "project").mkdir()
    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "diagnosis"})
    (tmp_path / "data" / "data").mkdir(parents=True)
    frame.to_csv(tmp_path / "data" / "data" / "good.csv", index=False)
    frame.drop(columns=["diagnosis"]).to_csv(tmp_path / "data" / "data" / "no_target.csv", index=False)
    bad = frame.copy()
    bad["mean radius"] = ["large" if i % 2 else "small" for i in range(len(bad))]
    bad.to_csv(tmp_path / "data" / "data" / "text_feature.csv", index=False)
    return tmp_path


def train(lab: Path, data: str, task_id: str = "train") -> dict:
    operator = DSSTrainModelOperator(task_id=task_id, model="cancer", data=data, config_dir=str(lab))
    return operator.execute(fake_context(task_id=task_id))


def saved_state(lab: Path) -> tuple[str, list[str]]:
    model = lab / "data" / "models" / "cancer"
    return (model / "active.json").read_text(), sorted(p.name for p in (model / "versions").iterdir())


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("data/no_target.csv", r"no_target.csv: target column 'diagnosis' not found"),
        ("data/text_feature.csv", r"'mean radius'.*not numeric.*categorical"),
    ],
)
def test_failed_training_leaves_the_active_version_untouched(lab, data, expected):
    first = train(lab, "data/good.csv")
    assert first["promoted"] is True and first["reason"] == "no active version"
    before = saved_state(lab)
    assert before[1] == [first["version"]]

    with pytest.raises(ExecutionError, match=r"(?s)ModelInputError: .*" + expected) as failure:
        train(lab, data, task_id="train_again")
    assert "left untouched" in str(failure.value)
    assert saved_state(lab) == before, "no new version, the same active pointer"
    assert leftover_staging(lab.parent) == [], "staged files of the failed run are gone"

    scored = DSSScoreModelOperator(
        task_id="score", model="cancer", data="data/good.csv", predictions="scored", config_dir=str(lab)
    ).execute(fake_context(task_id="score"))
    assert scored["version"] == json.loads(before[0])["version"], "scoring still uses the first version"
    assert scored["rows"] == 569
