"""The estimator and its preprocessing pipeline, the fitted model that speaks in the user's labels, and
fitting a training run (split, fit, cross-validation)."""

import dataclasses
import importlib
import os
import time
from typing import Any, Dict, List, Optional, Tuple

from .. import ml_catalog
from ..errors import ModelInputError
from .common import PACKAGE_HINTS, _fmt, _log, _plain, _preview, _read_json, _suggestion
from .metrics import _greater_is_better, compute_metrics


def _estimator_class(algorithm: str, task: str, run_info: Dict[str, Any]) -> Any:
    module_name, class_name = ml_catalog.ALGORITHMS[algorithm][task].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        package = PACKAGE_HINTS.get(module_name.split(".")[0], module_name)
        raise ModelInputError(
            "algorithm %r needs the Python module %r, which code env %r does not have: add %s to the "
            "env's packages" % (algorithm, module_name, run_info.get("code_env") or "?", package)
        ) from exc
    return getattr(module, class_name)


def _make_estimator(spec: Dict[str, Any], run_info: Dict[str, Any]) -> Tuple[Any, Dict[str, Any]]:
    """The estimator with the user's hyperparameters, seeded with the split seed unless told otherwise."""
    estimator_class = _estimator_class(spec["algorithm"], spec["task"], run_info)
    allowed = sorted(estimator_class().get_params())
    hyperparameters = dict(spec["hyperparameters"])
    for name in hyperparameters:
        if name not in allowed:
            raise ModelInputError(
                "model definition: hyperparameter %r is not a parameter of %s (%s).%s Fix "
                "hyperparameters: (valid: %s)"
                % (
                    name,
                    spec["algorithm"],
                    estimator_class.__name__,
                    _suggestion(name, allowed),
                    _preview(allowed, 40),
                )
            )
    if spec["metric"] == "log_loss" and not hasattr(estimator_class, "predict_proba"):
        raise ModelInputError(
            "model definition: metric log_loss needs class probabilities, which %s (%s) does not give: "
            "choose another metric: or algorithm:" % (spec["algorithm"], estimator_class.__name__)
        )
    if "random_state" in allowed and "random_state" not in hyperparameters:
        hyperparameters["random_state"] = spec["split"]["seed"]
    return estimator_class(**hyperparameters), hyperparameters


def _make_pipeline(numeric: List[str], categorical: List[str], estimator: Any, scale: bool) -> Any:
    """Preprocessing + estimator in one Pipeline, so the saved model takes the raw input columns.

    Only scikit-learn classes go in: anything defined here would pickle under a runtime module name
    (``dss_runtime.model...`` in a code env) that the process loading the model may not have.
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric_steps: List[Tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if scale:
        numeric_steps.append(("scale", StandardScaler()))
    transformers: List[Tuple[str, Any, List[str]]] = []
    if numeric:
        transformers.append(("num", Pipeline(numeric_steps), numeric))
    if categorical:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        transformers.append(("cat", encoder, categorical))
    # dense output: HistGradientBoosting rejects sparse input
    prepare = ColumnTransformer(transformers, sparse_threshold=0.0)
    return Pipeline([("prepare", prepare), ("model", estimator)])


class FittedModel:
    """A fitted pipeline that speaks in the user's labels (XGBoost is trained on 0..n-1 codes)."""

    def __init__(
        self,
        pipeline: Any,
        task: str,
        label_classes: Optional[List[Any]] = None,
        meta: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.pipeline = pipeline
        self.task = task
        self.label_classes = label_classes
        self.meta: Dict[str, Any] = meta or {}

    @classmethod
    def load(cls, version_dir: str) -> "FittedModel":
        import joblib
        import sklearn

        meta: Dict[str, Any] = _read_json(os.path.join(version_dir, "meta.json"))
        trained_with = meta.get("libraries", {}).get("sklearn")
        if trained_with and trained_with != sklearn.__version__:
            _log(
                "WARNING: %s was trained with scikit-learn %s, this code env has %s"
                % (meta.get("version"), trained_with, sklearn.__version__)
            )
        pipeline = joblib.load(os.path.join(version_dir, "model.joblib"))
        return cls(pipeline, meta["task"], meta.get("label_classes"), meta)

    @property
    def classes(self) -> List[Any]:
        if self.task != "classification":
            return []
        if self.label_classes is not None:
            return list(self.label_classes)
        return [_plain(label) for label in self.pipeline.classes_]

    def encode(self, labels: Any) -> Any:
        """Labels in the form the estimator was fitted on."""
        if self.label_classes is None:
            return labels
        codes = {label: index for index, label in enumerate(self.label_classes)}
        return labels.map(codes).to_numpy()

    def predict(self, inputs: Any) -> Any:
        import numpy as np

        raw = self.pipeline.predict(inputs)
        if self.label_classes is None:
            return raw
        return np.asarray(self.label_classes)[np.asarray(raw, dtype=int)]

    def probabilities(self, inputs: Any) -> Any:
        """Class probabilities (columns in ``classes`` order), or None when the estimator has none."""
        if self.task != "classification" or not hasattr(self.pipeline, "predict_proba"):
            return None
        return self.pipeline.predict_proba(inputs)

    def class_scores(self, inputs: Any) -> Any:
        """Scores that rank rows per class: probabilities, else the decision function (RidgeClassifier
        has no probabilities), else None. Binary decision functions give one column."""
        probabilities = self.probabilities(inputs)
        if probabilities is not None:
            return probabilities
        if self.task == "classification" and hasattr(self.pipeline, "decision_function"):
            return self.pipeline.decision_function(inputs)
        return None

    def positive_scores(self, inputs: Any) -> Any:
        """Binary classification: a score for the positive class (``classes[1]``), for ROC curves."""
        scores = self.class_scores(inputs)
        if scores is None or scores.ndim == 1:
            return scores
        return scores[:, 1]


@dataclasses.dataclass
class _Training:
    """What one training run knows once the data is checked and split."""

    spec: Dict[str, Any]
    model_id: str
    run: Dict[str, Any]
    data: Dict[str, Any]
    features: List[str]
    categorical: List[str]
    label_classes: Optional[List[Any]]
    hyperparameters: Dict[str, Any] = dataclasses.field(default_factory=dict)
    train_rows: Any = None
    test_rows: Any = None

    @property
    def target(self) -> str:
        return str(self.spec["target"])

    @property
    def greater_is_better(self) -> bool:
        return _greater_is_better(self.spec["task"], self.spec["metric"])


def _split(frame: Any, job: _Training) -> None:
    """Train/test split of whole rows (the champion may need columns the challenger dropped)."""
    from sklearn.model_selection import train_test_split

    options = job.spec["split"]
    stratify = None
    if job.spec["task"] == "classification" and options.get("stratify"):
        if int(frame[job.target].value_counts().min()) >= 2:
            stratify = frame[job.target]
        else:
            _log("WARNING: a class has a single row: the split is not stratified")
    try:
        job.train_rows, job.test_rows = train_test_split(
            frame, test_size=options["test_size"], random_state=options["seed"], stratify=stratify
        )
    except ValueError as exc:
        raise ModelInputError(
            "data %s: %d rows cannot be split with split.test_size %r (%s): add rows or change "
            "split.test_size" % (job.data["label"], len(frame), options["test_size"], exc)
        ) from exc
    _log(
        "split: %d train rows, %d test rows (seed %s%s)"
        % (
            len(job.train_rows),
            len(job.test_rows),
            options["seed"],
            ", stratified" if stratify is not None else "",
        )
    )


def _fit(pipeline: Any, rows: Any, job: _Training) -> FittedModel:
    model = FittedModel(pipeline, job.spec["task"], job.label_classes)
    try:
        pipeline.fit(rows[job.features], model.encode(rows[job.target]))
    except (ValueError, TypeError) as exc:
        if type(exc).__name__ != "InvalidParameterError":
            raise
        raise ModelInputError(
            "model definition: a hyperparameter of %s has an invalid value: %s. Fix hyperparameters:"
            % (job.spec["algorithm"], exc)
        ) from exc
    return model


def _cv_metrics(pipeline: Any, job: _Training) -> Dict[str, Optional[float]]:
    """Mean of each metric over cv_folds folds of the train part (the test split stays unseen)."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedKFold

    folds, rows = job.spec["cv_folds"], job.train_rows
    target = rows[job.target]
    if len(rows) < folds:
        raise ModelInputError(
            "data %s: %d training rows cannot make cv_folds=%d folds: lower cv_folds"
            % (job.data["label"], len(rows), folds)
        )
    stratified = job.spec["task"] == "classification" and int(target.value_counts().min()) >= folds
    splitter_class = StratifiedKFold if stratified else KFold
    splitter = splitter_class(n_splits=folds, shuffle=True, random_state=job.spec["split"]["seed"])
    per_fold = []
    for fit_index, check_index in splitter.split(rows, target):
        fold_model = _fit(clone(pipeline), rows.iloc[fit_index], job)
        check = rows.iloc[check_index]
        per_fold.append(compute_metrics(fold_model, check[job.features], check[job.target]))
    means: Dict[str, Optional[float]] = {}
    for name in per_fold[0]:
        values = [value for value in (scores[name] for scores in per_fold) if value is not None]
        means[name] = sum(values) / len(values) if values else None
    _log("cross-validation (%d folds): %s %s" % (folds, job.spec["metric"], _fmt(means[job.spec["metric"]])))
    return means


def _sized_thread_pools() -> Any:
    """Cap the OpenMP/BLAS thread pools at the CPUs this process may really use (affinity and the
    container's CPU quota, which os.cpu_count() ignores). Left alone, pools sized to the host's cores,
    or several runtimes spinning against each other, made small fits 50-300x slower on a 2-CPU VM."""
    import joblib
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=max(1, int(joblib.cpu_count())))


def _fit_and_measure(pipeline: Any, job: _Training) -> Tuple[FittedModel, Dict[str, Any]]:
    """Fit on the train split; metrics of the test split, or CV means on the train part."""
    metric = job.spec["metric"]
    cv_means = _cv_metrics(pipeline, job) if job.spec["cv_folds"] else None
    started = time.time()
    model = _fit(pipeline, job.train_rows, job)
    fit_seconds = round(time.time() - started, 3)
    test_metrics = compute_metrics(model, job.test_rows[job.features], job.test_rows[job.target])
    metrics = cv_means if cv_means is not None else test_metrics
    source = "cross-validation" if cv_means is not None else "test split"
    _log("fitted in %.2fs; %s %s on the %s" % (fit_seconds, metric, _fmt(metrics[metric]), source))
    return model, {
        "metrics": metrics,
        "metrics_source": "cv" if cv_means is not None else "test_split",
        "test_metrics": test_metrics,
        "hyperparameters": job.hyperparameters,
        "classes": model.classes if job.spec["task"] == "classification" else None,
        "fit_seconds": fit_seconds,
    }
