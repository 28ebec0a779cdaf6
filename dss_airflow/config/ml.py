"""Model definitions (``models:`` section, or ``definition=`` on a model operator).

A definition says *what* to learn (task, target, features, algorithm, hyperparameters, split, metric) and
where its saved versions live (a managed folder). Algorithm and metric names come from
:mod:`dss_airflow.runtime.ml_catalog`, the table the in-container engine uses too, so a typo fails when
the YAML is loaded or the DAG is parsed, with the closest valid name -- never after an image was pulled.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from dss_airflow.config.models import StrictModel
from dss_airflow.errors import closest_name
from dss_airflow.runtime.ml_catalog import ALGORITHMS, DEFAULT_METRIC, METRICS

ModelTask = Literal["classification", "regression"]
_JSON_SCALARS = (str, int, float, bool, type(None))


class SplitSettings(StrictModel):
    """Train/test split: the test part scores the model and compares it with the active version."""

    test_size: float = Field(default=0.2, gt=0.0, lt=1.0)
    seed: int = 42
    stratify: bool = Field(default=True, description="Keep class proportions (classification)")


class ModelDefinition(StrictModel):
    """An in-memory scikit-learn / XGBoost model, trained and scored in its code env's container."""

    task: ModelTask
    target: str = Field(min_length=1)
    features: list[str] | None = Field(
        default=None, description="Input columns; default: every column but the target and `exclude`"
    )
    exclude: list[str] = Field(default_factory=list, description="Columns never used (ids, dates)")
    categorical: list[str] = Field(default_factory=list, description="Columns one-hot encoded")
    algorithm: str
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    split: SplitSettings = Field(default_factory=SplitSettings)
    cv_folds: int | None = Field(default=None, ge=2, le=20, description="Cross-validated train metrics")
    metric: str | None = Field(default=None, description="Metric that decides promotions")
    folder: str = Field(description="Managed folder holding the saved versions")
    code_env: str | None = Field(default=None, description="Code env with scikit-learn (and xgboost)")
    description: str = ""

    @model_validator(mode="after")
    def _known_names(self) -> ModelDefinition:
        by_task = {name: tasks for name, tasks in ALGORITHMS.items() if self.task in tasks}
        if self.algorithm not in by_task:
            raise ValueError(_unknown("algorithm", self.algorithm, by_task, self.task))
        metrics = METRICS[self.task]
        if self.metric is not None and self.metric not in metrics:
            raise ValueError(_unknown("metric", self.metric, metrics, self.task))
        columns = set(self.features or ()) | set(self.categorical)
        if self.target in columns or self.target in self.exclude:
            raise ValueError(f"the target {self.target!r} cannot also be a feature or excluded")
        if self.features is not None:
            missing = [name for name in self.categorical if name not in self.features]
            if missing:
                raise ValueError(f"categorical columns {missing} are not in features; add them there")
        for name, value in self.hyperparameters.items():
            if not _is_json_value(value):
                raise ValueError(f"hyperparameter {name!r} must be a number, string, boolean or list")
        return self

    @property
    def decision_metric(self) -> str:
        return self.metric or DEFAULT_METRIC[self.task]

    def for_runtime(self) -> dict[str, Any]:
        """The JSON the in-container engine reads (its own keys; no worker paths)."""
        data = self.model_dump(exclude={"folder", "code_env", "description"})
        data["metric"] = self.decision_metric
        return data


def _unknown(kind: str, value: str, valid: dict[str, Any], task: str) -> str:
    suggestion = closest_name(value, valid)
    hint = f"; did you mean {suggestion!r}?" if suggestion else ""
    return f"unknown {kind} {value!r} for {task}{hint} ({kind}s: {', '.join(sorted(valid))})"


def _is_json_value(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_json_value(item) for item in value)
    return isinstance(value, _JSON_SCALARS)
