"""In-container ML engine of the model operators: train, evaluate, score and promote in-memory
scikit-learn / XGBoost models.

Standard library only at module level: numpy, pandas, scikit-learn, xgboost, matplotlib and joblib are
imported inside the functions that need them, so this file loads in any code env and fails with a clear
message only when an action needs a missing library. Run by runner.py as a recipe (``params["action"]``
is train, evaluate, score or promote; see main()), or called in-process through train(), evaluate(),
score() and promote().

Directory contract (the operator relies on it)
----------------------------------------------
``model_dir`` is the saved model's directory. It is read-only here and may not exist yet (no versions)::

    model_dir/active.json                 {"version", "activated_at", "reason", "previous", "run"}
    model_dir/history/<UTC ts>-<V>.json   one file per pointer move (same content as active.json)
    model_dir/versions/<V>/model.joblib   the fitted sklearn Pipeline (preprocessing + estimator)
    model_dir/versions/<V>/meta.json      definition, task, target, features, algorithm, hyperparameters,
                                          metric, metrics, comparison with the champion, code env,
                                          execution config, image, data fingerprint, libraries, run ids
    model_dir/versions/<V>/metrics.json   just the metrics
    model_dir/versions/<V>/features.json  ordered input features with dtype and role (numeric/categorical)
    model_dir/versions/<V>/evaluations/<E>/metrics.json + PNG plots

Version ids are ``v<YYYYmmddTHHMMSS>Z-<4 hex>`` (UTC), evaluation ids the same with an ``e``. A new id
sorts after every existing one (so "latest" is the greatest id) and is never reused or overwritten.

Nothing is ever written into model_dir:

* train writes ``versions_out/<V>/...`` and evaluate ``versions_out/<V>/evaluations/<E>/...``; the
  operator moves versions_out onto ``model_dir/versions/`` after a success;
* moving the active pointer means writing ``pointer_out/active.json`` and
  ``pointer_out/history/<ts>-<V>.json``; pointer_out is moved onto model_dir AFTER versions_out, so
  active.json never names a missing version. Not moving the pointer writes nothing there;
* score writes ``predictions_out/predictions.csv`` (or ``.parquet``).

Every file is written complete, once. Mistakes the user must fix raise ModelInputError, whose message
names the file, the column or field, the value, the fix and the closest valid name: the runner reports
it as "ModelInputError: <message>", so the message stands alone.
"""

import dataclasses
import datetime
import difflib
import hashlib
import importlib
import json
import os
import platform
import random
import re
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import dss_recipe, ml_catalog
from .errors import ModelInputError

LOG_PREFIX = "[dss-model]"
VERSION_PATTERN = re.compile(r"^v\d{8}T\d{6}Z-[0-9a-f]{4}$")
EVALUATION_PATTERN = re.compile(r"^e\d{8}T\d{6}Z-[0-9a-f]{4}$")
ID_STAMP_FORMAT = "%Y%m%dT%H%M%S"
DATA_SUFFIXES = (".csv", ".parquet", ".pq")
OUTPUT_FORMATS = ("csv", "parquet")
PROMOTION_POLICIES = ("always", "never", "if_better")
DEFAULT_SPLIT: Dict[str, Any] = {"test_size": 0.2, "seed": 42, "stratify": True}
# Penalised or distance-based estimators: their numeric inputs are standardised (trees do not care).
SCALED_ALGORITHMS = ("logistic_regression", "ridge", "knn")
PACKAGE_HINTS = {"sklearn": "scikit-learn==1.9.1", "xgboost": "xgboost-cpu==3.2.0 (or xgboost)"}
PLOT_SIZE = (6.0, 4.5)
PLOT_DPI = 100
TOP_FEATURES = 20


# --------------------------------------------------------------------------------------------- helpers


def _log(message: str) -> None:
    """Progress lines on stdout: they become the Airflow task log."""
    print("%s %s" % (LOG_PREFIX, message), flush=True)


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _write_json(path: str, payload: Any) -> None:
    """One complete file per call: staged files are promoted file by file, never appended to."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value json can write (class labels come from numpy arrays)."""
    return value.item() if hasattr(value, "item") else value


def _number(value: Any) -> Optional[float]:
    """A finite float, or None (JSON has no NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _fmt(value: Optional[float]) -> str:
    return "n/a" if value is None else "%.4g" % value


def _suggestion(name: Any, candidates: Sequence[Any]) -> str:
    """' Did you mean 'x'?' for the closest valid name, or '' when nothing is close."""
    texts = [str(candidate) for candidate in candidates]
    by_lower = {text.lower(): text for text in texts}
    if str(name).lower() in by_lower:
        return " Did you mean %r?" % by_lower[str(name).lower()]
    matches = difflib.get_close_matches(str(name), texts, n=1, cutoff=0.5)
    return " Did you mean %r?" % matches[0] if matches else ""


def _preview(names: Sequence[Any], limit: int = 15) -> str:
    """'a, b, c ... (40 in all)': enough names for a message to stay readable."""
    if not names:
        return "none"
    shown = ", ".join(str(name) for name in list(names)[:limit])
    return shown if len(names) <= limit else "%s ... (%d in all)" % (shown, len(names))


def _run_ids(run_info: Dict[str, Any]) -> Dict[str, Any]:
    return {key: run_info.get(key) for key in ("dag_id", "task_id", "run_id")}


# ------------------------------------------------------------------------------------------------ ids


def _stamp_of(identifier: str) -> datetime.datetime:
    moment = datetime.datetime.strptime(identifier[1:16], ID_STAMP_FORMAT)
    return moment.replace(tzinfo=datetime.timezone.utc)


def new_id(prefix: str, taken: Sequence[str]) -> str:
    """A fresh ``<prefix><UTC stamp>Z-<hex>`` id sorting after every taken one, so ids stay ordered
    even when two runs share a second or the clock is behind the newest id."""
    stamp = _utc_now().replace(microsecond=0)
    lowest_suffix = 0
    if taken:
        newest = max(taken)
        newest_stamp = _stamp_of(newest)
        if newest_stamp >= stamp:
            stamp = newest_stamp
            lowest_suffix = int(newest[-4:], 16) + 1
            if lowest_suffix > 0xFFFF:
                stamp, lowest_suffix = stamp + datetime.timedelta(seconds=1), 0
    # a window of 4096: two runs starting in the same second rarely collide, and a second still has
    # room for many ordered ids before the stamp moves on
    suffix = random.SystemRandom().randrange(lowest_suffix, min(lowest_suffix + 0x1000, 0x10000))
    return "%s%sZ-%04x" % (prefix, stamp.strftime(ID_STAMP_FORMAT), suffix)


def _ids_in(directory: str, pattern: "re.Pattern[str]") -> List[str]:
    if not os.path.isdir(directory):
        return []
    return sorted(name for name in os.listdir(directory) if pattern.match(name))


# ------------------------------------------------------------------------------------------------ data


def _data_files(data_path: str) -> List[str]:
    """The data files behind data_path: the file itself, or every csv/parquet file under the directory."""
    if os.path.isfile(data_path):
        if not data_path.lower().endswith(DATA_SUFFIXES):
            raise ModelInputError(
                "data %s: unsupported file type; the model reads .csv, .parquet or .pq files (or a "
                "directory of them): write one of those in the prepare recipe" % data_path
            )
        return [data_path]
    if not os.path.isdir(data_path):
        raise ModelInputError(
            "data %s does not exist: check the task's data input (folder and file name) and that the "
            "recipe producing it ran first" % data_path
        )
    found = []
    for directory, subdirectories, names in os.walk(data_path):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith((".", "_")))
        for name in names:
            if name.lower().endswith(DATA_SUFFIXES) and not name.startswith((".", "_")):
                found.append(os.path.join(directory, name))
    if not found:
        raise ModelInputError(
            "data directory %s holds no .csv, .parquet or .pq file: point the data input at the "
            "prepared data" % data_path
        )
    return sorted(found)


def _read_table(path: str) -> Any:
    import pandas as pd

    try:
        if path.lower().endswith(".csv"):
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        raise ModelInputError(
            "data %s cannot be read (%s: %s): fix or rewrite the file in the prepare recipe"
            % (path, type(exc).__name__, exc)
        ) from exc


def _fingerprint(files: List[str], root: str) -> str:
    """sha256 of the file bytes (one file: exactly ``sha256sum``; several: of their names and hashes)."""
    digests = []
    for path in files:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digests.append("%s  %s" % (digest.hexdigest(), os.path.relpath(path, root)))
    if len(files) == 1:
        return digests[0].split()[0]
    return hashlib.sha256("\n".join(digests).encode("utf-8")).hexdigest()


def load_data(data_path: str, allow_empty: bool = False) -> Tuple[Any, Dict[str, Any]]:
    """The data as one DataFrame, plus what meta.json records about it (files, fingerprint, shape).
    Only scoring accepts no rows (a batch with nothing new); training and evaluation need rows."""
    import pandas as pd

    data_path = os.fspath(data_path)
    files = _data_files(data_path)
    frames = [_read_table(path) for path in files]
    frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    frame.columns = [str(column) for column in frame.columns]
    root = data_path if os.path.isdir(data_path) else os.path.dirname(data_path)
    relative = [os.path.relpath(path, root) for path in files]
    label = relative[0] if len(files) == 1 else "%s/ (%d files)" % (os.path.basename(data_path), len(files))
    info = {
        "path": data_path,
        "label": label,
        "files": relative,
        "sha256": _fingerprint(files, root),
        "rows": int(len(frame)),
        "columns": list(frame.columns),
    }
    _log("loaded %d rows x %d columns from %s" % (len(frame), len(frame.columns), label))
    if len(frame) == 0 and not allow_empty:
        raise ModelInputError("data %s has no rows: check the filter of the recipe that wrote it" % data_path)
    return frame, info


# ------------------------------------------------------------------------------------------ definition


def _check_catalog_names(spec: Dict[str, Any]) -> None:
    """task, algorithm and metric must be catalog names (the config layer checked; defend anyway)."""
    task = spec.get("task")
    if task not in ml_catalog.TASKS:
        raise ModelInputError(
            "model definition: task %r is not one of %s.%s Fix task:"
            % (task, ", ".join(ml_catalog.TASKS), _suggestion(task, ml_catalog.TASKS))
        )
    algorithm = spec.get("algorithm")
    if algorithm not in ml_catalog.ALGORITHMS:
        raise ModelInputError(
            "model definition: algorithm %r is unknown.%s Fix algorithm: (one of %s)"
            % (
                algorithm,
                _suggestion(algorithm, list(ml_catalog.ALGORITHMS)),
                ", ".join(ml_catalog.ALGORITHMS),
            )
        )
    if task not in ml_catalog.ALGORITHMS[algorithm]:
        offered = [name for name, tasks in ml_catalog.ALGORITHMS.items() if task in tasks]
        raise ModelInputError(
            "model definition: algorithm %r does not do %s: choose one of %s"
            % (algorithm, task, ", ".join(offered))
        )
    metrics = ml_catalog.METRICS[task]
    if spec["metric"] not in metrics:
        raise ModelInputError(
            "model definition: metric %r is not a %s metric.%s Fix metric: (one of %s)"
            % (spec["metric"], task, _suggestion(spec["metric"], list(metrics)), ", ".join(metrics))
        )


def _check_split(spec: Dict[str, Any]) -> None:
    test_size = spec["split"]["test_size"]
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) or test_size <= 0:
        raise ModelInputError(
            "model definition: split.test_size %r must be a fraction between 0 and 1 (e.g. 0.2) or a "
            "row count" % (test_size,)
        )
    folds = spec["cv_folds"]
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 2):
        raise ModelInputError(
            "model definition: cv_folds %r must be a whole number of at least 2, or left out" % (folds,)
        )


def _names(value: Any) -> List[str]:
    """A list of column names; a lone name (``categorical: city``) counts as a list of one."""
    return [value] if isinstance(value, str) else [str(name) for name in value]


def normalized_definition(definition: Dict[str, Any]) -> Dict[str, Any]:
    """The definition with every default filled in, checked against the catalog."""
    if not isinstance(definition, dict):
        raise ModelInputError("model definition must be a mapping, got %r" % (definition,))
    spec = dict(definition)
    if not spec.get("target"):
        raise ModelInputError("model definition: target is missing: name the column to predict")
    features = spec.get("features")
    spec["features"] = None if features is None else _names(features)
    for field in ("exclude", "categorical"):
        spec[field] = _names(spec.get(field) or [])
    spec["hyperparameters"] = dict(spec.get("hyperparameters") or {})
    spec["split"] = dict(DEFAULT_SPLIT, **(spec.get("split") or {}))
    spec["cv_folds"] = spec.get("cv_folds")
    spec["metric"] = spec.get("metric") or ml_catalog.DEFAULT_METRIC.get(spec.get("task") or "", "")
    _check_catalog_names(spec)
    _check_split(spec)
    return spec


def _missing_column(name: str, columns: List[str], source: str, field: str) -> ModelInputError:
    return ModelInputError(
        "data %s: column %r named in %s: is not in the data.%s Fix %s: in the model definition or add "
        "the column in the prepare recipe. Columns: %s"
        % (source, name, field, _suggestion(name, columns), field, _preview(columns))
    )


def _resolve_features(frame: Any, spec: Dict[str, Any], source: str) -> Tuple[List[str], List[str]]:
    """The final input columns and the categorical ones among them, checked against the data."""
    columns = list(frame.columns)
    for field in ("exclude", "categorical"):
        for name in spec[field]:
            if name not in columns:
                raise _missing_column(name, columns, source, field)
    if spec["features"] is None:
        left_out = set(spec["exclude"]) | {spec["target"]}
        features = [name for name in columns if name not in left_out]
    else:
        for name in spec["features"]:
            if name == spec["target"]:
                raise ModelInputError(
                    "model definition: the target %r is also listed in features: remove it from "
                    "features:" % name
                )
            if name not in columns:
                raise _missing_column(name, columns, source, "features")
        features = [name for name in spec["features"] if name not in spec["exclude"]]
    if not features:
        raise ModelInputError(
            "data %s: no feature column left once the target %r and exclude: are removed: list "
            "features: or shorten exclude:" % (source, spec["target"])
        )
    categorical = [name for name in features if name in set(spec["categorical"])]
    return features, categorical


def _require_target(frame: Any, target: str, source: str) -> None:
    """The target is present and complete (training and evaluation need it)."""
    columns = list(frame.columns)
    if target not in columns:
        raise ModelInputError(
            "data %s: target column %r not found.%s Fix target: in the model definition or add the "
            "column in the prepare recipe. Columns: %s"
            % (source, target, _suggestion(target, columns), _preview(columns))
        )
    missing = frame[target].isna()
    if missing.any():
        rows = [str(_plain(index)) for index in frame.index[missing][:5]]
        raise ModelInputError(
            "data %s: target column %r has %d missing values (rows %s): drop or fill them in the "
            "prepare recipe" % (source, target, int(missing.sum()), ", ".join(rows))
        )


def _check_target_kind(frame: Any, target: str, task: str, source: str) -> None:
    """A classification needs two classes; a regression a numeric target."""
    import pandas as pd

    values = frame[target]
    if task == "classification":
        classes = values.unique()
        if len(classes) < 2:
            raise ModelInputError(
                "data %s: target %r has a single class %r: a classification needs at least two; check "
                "the filter of the prepare recipe or use task: regression"
                % (source, target, _plain(classes[0]))
            )
        fractional = pd.api.types.is_float_dtype(values) and bool((values % 1 != 0).any())
        if fractional:
            raise ModelInputError(
                "data %s: target %r of a classification has fractional values (e.g. %r): use task: "
                "regression, or bin it into classes in the prepare recipe"
                % (source, target, _plain(values[values % 1 != 0].iloc[0]))
            )
    elif not pd.api.types.is_numeric_dtype(values):
        raise ModelInputError(
            "data %s: target %r of a regression is not numeric (sample value %r): use task: "
            "classification or convert it in the prepare recipe" % (source, target, _plain(values.iloc[0]))
        )


def _check_numeric(frame: Any, numeric: List[str], source: str, fix: str) -> None:
    """A text column fed to the numeric imputer would fail deep in scikit-learn: say which one, and how."""
    import pandas as pd

    for name in numeric:
        column = frame[name]
        present = column.dropna()
        if pd.api.types.is_numeric_dtype(column) or not len(present):  # no value: nothing to reject
            continue
        sample = _plain(present.iloc[0])
        raise ModelInputError(
            "data %s: feature %r is not numeric (sample value %r) and is not listed in categorical: %s"
            % (source, name, sample, fix)
        )


# ------------------------------------------------------------------------------------------ estimator


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

    Only scikit-learn classes go in: anything defined here would pickle as ``__main__`` in a container.
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


# -------------------------------------------------------------------------------------------- metrics


def _safe_metric(compute: Callable[[], Any]) -> Optional[float]:
    """A metric that is undefined on this data (one class in the test split...) becomes None."""
    try:
        return _number(compute())
    except (ValueError, TypeError, IndexError):
        return None


def _classification_metrics(model: FittedModel, inputs: Any, actual: Any) -> Dict[str, Optional[float]]:
    from sklearn import metrics as sk

    predicted = model.predict(inputs)
    classes = model.classes
    binary = len(classes) == 2
    options: Dict[str, Any] = {"average": "binary" if binary else "weighted", "zero_division": 0}
    if binary:
        options["pos_label"] = classes[1]
    result = {
        "accuracy": _safe_metric(lambda: sk.accuracy_score(actual, predicted)),
        "f1": _safe_metric(lambda: sk.f1_score(actual, predicted, **options)),
        "precision": _safe_metric(lambda: sk.precision_score(actual, predicted, **options)),
        "recall": _safe_metric(lambda: sk.recall_score(actual, predicted, **options)),
        "roc_auc": None,
        "log_loss": None,
    }
    result["roc_auc"] = _roc_auc(actual, model.class_scores(inputs), classes)
    probabilities = model.probabilities(inputs)
    if probabilities is not None:
        result["log_loss"] = _safe_metric(lambda: sk.log_loss(actual, probabilities, labels=classes))
    return result


def _binary_auc(is_positive: Any, scores: Any) -> Optional[float]:
    from sklearn.metrics import roc_auc_score

    return _safe_metric(lambda: roc_auc_score(is_positive, scores))


def _roc_auc(actual: Any, scores: Any, classes: List[Any]) -> Optional[float]:
    """Binary: AUC of the positive class. Multiclass: the one-vs-rest macro average (sklearn's "ovr"),
    computed class by class so decision scores work as well as probabilities."""
    if scores is None:
        return None
    if len(classes) == 2:
        return _binary_auc(actual == classes[1], scores if scores.ndim == 1 else scores[:, 1])
    per_class = [_binary_auc(actual == label, scores[:, index]) for index, label in enumerate(classes)]
    known = [value for value in per_class if value is not None]
    return sum(known) / len(known) if len(known) == len(per_class) else None


def _regression_metrics(model: FittedModel, inputs: Any, actual: Any) -> Dict[str, Optional[float]]:
    from sklearn import metrics as sk

    predicted = model.predict(inputs)
    return {
        "r2": _safe_metric(lambda: sk.r2_score(actual, predicted)),
        "rmse": _safe_metric(lambda: sk.mean_squared_error(actual, predicted) ** 0.5),
        "mae": _safe_metric(lambda: sk.mean_absolute_error(actual, predicted)),
    }


def compute_metrics(model: FittedModel, inputs: Any, actual: Any) -> Dict[str, Optional[float]]:
    """Every metric of the task (ml_catalog.METRICS); None where undefined on this data."""
    if model.task == "classification":
        return _classification_metrics(model, inputs, actual)
    return _regression_metrics(model, inputs, actual)


def _is_better(candidate: Optional[float], incumbent: Optional[float], greater_is_better: bool) -> bool:
    """Strictly better: a tie keeps the incumbent, and an undefined score never wins."""
    if candidate is None or incumbent is None:
        return False
    return candidate > incumbent if greater_is_better else candidate < incumbent


def _greater_is_better(task: str, metric: str) -> bool:
    return ml_catalog.METRICS[task][metric]


def _comparison_text(
    names: Tuple[str, str], versions: Tuple[str, str], metric: str, scores: Tuple[Any, Any], greater: bool
) -> Tuple[bool, str]:
    """(candidate strictly better, "challenger v2 roc_auc 0.98 > champion v1 0.97" style text)."""
    better = _is_better(scores[0], scores[1], greater)
    symbol = {(True, True): ">", (True, False): "<", (False, True): "<=", (False, False): ">="}[
        (better, greater)
    ]
    text = "%s %s %s %s %s %s %s %s" % (
        names[0],
        versions[0],
        metric,
        _fmt(scores[0]),
        symbol,
        names[1],
        versions[1],
        _fmt(scores[1]),
    )
    if not greater:
        text += " (lower is better)"
    return better, text


# ----------------------------------------------------------------------------------------- model store


def _version_dir(model_dir: str, version: str) -> str:
    return os.path.join(model_dir, "versions", version)


def list_versions(model_dir: str) -> List[str]:
    """Complete versions (model.joblib and meta.json present), oldest first."""
    root = os.path.join(model_dir, "versions")
    return [
        name
        for name in _ids_in(root, VERSION_PATTERN)
        if os.path.isfile(os.path.join(root, name, "meta.json"))
        and os.path.isfile(os.path.join(root, name, "model.joblib"))
    ]


def active_version(model_dir: str) -> Optional[str]:
    """The version active.json points at, or None before the first promotion."""
    path = os.path.join(model_dir, "active.json")
    if not os.path.isfile(path):
        return None
    version = _read_json(path).get("version")
    return str(version) if version else None


def resolve_version(model_dir: str, version: Optional[str]) -> str:
    """The version id meant by 'latest' (the greatest id), 'active' (active.json's) or an id."""
    versions = list_versions(model_dir)
    if version in (None, "", "latest"):
        if not versions:
            raise ModelInputError("model %s has no version yet: train it first" % model_dir)
        return versions[-1]
    if version == "active":
        active = active_version(model_dir)
        if active is None:
            raise ModelInputError(
                "no active version in model %s: train first or choose a version" % model_dir
            )
        if active not in versions:
            raise ModelInputError(
                "model %s: active.json names version %s, which is not (completely) in versions/: promote "
                "an existing version with force (latest: %s)"
                % (model_dir, active, versions[-1] if versions else "none")
            )
        version = active
    if version not in versions:
        raise ModelInputError(
            "model %s: version %r not found.%s Existing versions (newest last): %s; or use 'latest' or "
            "'active'" % (model_dir, version, _suggestion(version, versions), _preview(versions[-15:]))
        )
    return str(version)


def _move_pointer(
    pointer_out: str, version: str, reason: str, previous: Optional[str], run_info: Dict[str, Any]
) -> None:
    """Stage the new active.json and its history record; the operator moves them onto model_dir."""
    moment = _utc_now()
    record = {
        "version": version,
        "activated_at": moment.isoformat(),
        "reason": reason,
        "previous": previous,
        "run": _run_ids(run_info),
    }
    history_name = "%s-%s.json" % (moment.strftime("%Y%m%dT%H%M%S.%fZ"), version)
    _write_json(os.path.join(pointer_out, "active.json"), record)
    _write_json(os.path.join(pointer_out, "history", history_name), record)
    _log("active version -> %s (previous: %s)" % (version, previous or "none"))


def _library_versions(uses_xgboost: bool) -> Dict[str, str]:
    import joblib
    import numpy
    import pandas
    import sklearn

    versions = {
        "python": platform.python_version(),
        "sklearn": sklearn.__version__,
        "pandas": pandas.__version__,
        "numpy": numpy.__version__,
        "joblib": joblib.__version__,
    }
    if uses_xgboost:
        import xgboost

        versions["xgboost"] = xgboost.__version__
    return versions


# ---------------------------------------------------------------------------------------------- train


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


def _checked_columns(frame: Any, spec: Dict[str, Any], source: str) -> Tuple[List[str], List[str]]:
    """Every data check that can fail before fitting, so a mistake costs seconds, not a fit."""
    _require_target(frame, spec["target"], source)
    _check_target_kind(frame, spec["target"], spec["task"], source)
    features, categorical = _resolve_features(frame, spec, source)
    numeric = [name for name in features if name not in categorical]
    _check_numeric(frame, numeric, source, "add it to categorical: or encode it in the prepare recipe")
    return features, categorical


def _label_classes(target: Any, spec: Dict[str, Any]) -> Optional[List[Any]]:
    """XGBoost only learns labels 0..n-1: keep the real classes to map predictions back."""
    if spec["task"] != "classification" or spec["algorithm"] != "xgboost":
        return None
    return sorted(_plain(label) for label in target.unique())


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


def _compare_with_champion(
    model_dir: str, champion_version: str, challenger_score: Optional[float], job: _Training
) -> Dict[str, Any]:
    """Score the active version on the challenger's test split: same rows, same metric."""
    metric = job.spec["metric"]
    comparison: Dict[str, Any] = {
        "champion": champion_version,
        "metric": metric,
        "challenger_score": challenger_score,
        "champion_score": None,
        "data": "test split of %s" % job.data["label"],
    }
    try:
        champion = FittedModel.load(_version_dir(model_dir, champion_version))
        features = champion.meta["features"]
        missing = [name for name in features if name not in job.test_rows.columns]
        if missing:
            raise ModelInputError("it needs column(s) %s, missing from this data" % _preview(missing))
        scores = compute_metrics(champion, job.test_rows[features], job.test_rows[job.target])
        comparison["champion_score"] = scores.get(metric)
    except Exception as exc:  # noqa: BLE001 - an unusable champion is reported, not fatal
        comparison["error"] = "%s: %s" % (type(exc).__name__, exc)
        _log("WARNING: the champion %s could not be scored: %s" % (champion_version, comparison["error"]))
    return comparison


def _training_decision(
    policy: str, version: str, active: Optional[str], comparison: Optional[Dict[str, Any]], job: _Training
) -> Tuple[bool, str]:
    """(move the pointer, why) for the promotion policy of a train task."""
    if active is None or comparison is None:
        return True, "no active version"
    if policy == "always":
        return True, "promotion: always (replaces %s)" % active
    if policy == "never":
        return False, "not promoted: promotion is 'never'; the active version stays %s" % active
    scores = (comparison["challenger_score"], comparison["champion_score"])
    if None in scores:
        return False, (
            "not promoted: challenger %s and champion %s could not be compared on %s (%s); the active "
            "version stays %s"
            % (version, active, job.spec["metric"], comparison.get("error", "undefined score"), active)
        )
    versions = (version, active)
    better, text = _comparison_text(
        ("challenger", "champion"), versions, job.spec["metric"], scores, job.greater_is_better
    )
    if better:
        return True, text
    return False, "not promoted: %s; the active version stays %s" % (text, active)


def _write_version(
    versions_out: str, version: str, model: FittedModel, meta: Dict[str, Any], features: List[Dict[str, str]]
) -> None:
    """model.joblib, meta.json, metrics.json and features.json of a new version, in the staging dir."""
    import joblib

    directory = os.path.join(versions_out, version)
    if os.path.exists(directory):
        raise RuntimeError("%s already exists: a version id is never reused" % directory)
    os.makedirs(directory)
    joblib.dump(model.pipeline, os.path.join(directory, "model.joblib"))
    _write_json(os.path.join(directory, "meta.json"), meta)
    _write_json(os.path.join(directory, "metrics.json"), meta["metrics"])
    _write_json(os.path.join(directory, "features.json"), features)


def _feature_details(job: _Training) -> List[Dict[str, str]]:
    return [
        {
            "name": name,
            "dtype": str(job.train_rows[name].dtype),
            "role": "categorical" if name in job.categorical else "numeric",
        }
        for name in job.features
    ]


def _version_meta(job: _Training, version: str, results: Dict[str, Any]) -> Dict[str, Any]:
    spec = job.spec
    return dict(
        results,
        version=version,
        model_id=job.model_id,
        created_at=_utc_now().isoformat(),
        definition=spec,
        task=spec["task"],
        target=job.target,
        features=job.features,
        categorical=job.categorical,
        algorithm=spec["algorithm"],
        estimator=ml_catalog.ALGORITHMS[spec["algorithm"]][spec["task"]],
        metric=spec["metric"],
        greater_is_better=job.greater_is_better,
        label_classes=job.label_classes,
        code_env=job.run.get("code_env"),
        execution_config=job.run.get("execution_config"),
        image=job.run.get("image"),
        data=dict(job.data, train_rows=len(job.train_rows), test_rows=len(job.test_rows)),
        libraries=_library_versions(spec["algorithm"] == "xgboost"),
        run=_run_ids(job.run),
    )


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


def _prepare_training(
    definition: Dict[str, Any], data_path: str, model_dir: str, run: Dict[str, Any], model_id: Optional[str]
) -> Tuple[_Training, Any]:
    """Checked definition and data, split: everything that can fail before the fit."""
    spec = normalized_definition(definition)
    name = model_id or run.get("model_id") or os.path.basename(os.path.normpath(model_dir))
    _log("train %s: %s %s of %r" % (name, spec["algorithm"], spec["task"], spec["target"]))
    estimator, hyperparameters = _make_estimator(spec, run)
    frame, data = load_data(data_path)
    features, categorical = _checked_columns(frame, spec, data["label"])
    job = _Training(
        spec, str(name), run, data, features, categorical, _label_classes(frame[spec["target"]], spec)
    )
    job.hyperparameters = hyperparameters
    numeric = [column for column in features if column not in categorical]
    pipeline = _make_pipeline(numeric, categorical, estimator, spec["algorithm"] in SCALED_ALGORITHMS)
    _log("%d features (%d categorical)" % (len(features), len(categorical)))
    _split(frame, job)
    return job, pipeline


def train(
    definition: Dict[str, Any],
    data_path: str,
    model_dir: str,
    versions_out: str,
    pointer_out: str,
    run_info: Optional[Dict[str, Any]] = None,
    promotion: str = "always",
    model_id: Optional[str] = None,
) -> Dict[str, Any]:
    """Fit a new version on the train split, stage it in versions_out, and stage a pointer move in
    pointer_out when the promotion policy ("always", "never", "if_better") says so."""
    if promotion not in PROMOTION_POLICIES:
        raise ModelInputError(
            "promotion %r is not one of %s.%s"
            % (promotion, ", ".join(PROMOTION_POLICIES), _suggestion(promotion, PROMOTION_POLICIES))
        )
    model_dir, versions_out, pointer_out = (
        os.fspath(path) for path in (model_dir, versions_out, pointer_out)
    )
    run = dict(run_info or {})
    job, pipeline = _prepare_training(definition, os.fspath(data_path), model_dir, run, model_id)
    metric = job.spec["metric"]
    with _sized_thread_pools():
        model, results = _fit_and_measure(pipeline, job)
        active = active_version(model_dir)
        challenger_score = results["test_metrics"][metric]
        comparison = _compare_with_champion(model_dir, active, challenger_score, job) if active else None
    taken = _ids_in(os.path.join(model_dir, "versions"), VERSION_PATTERN)
    version = new_id("v", taken + _ids_in(versions_out, VERSION_PATTERN))
    promoted, reason = _training_decision(promotion, version, active, comparison, job)
    results.update(
        comparison=comparison, promotion={"policy": promotion, "promoted": promoted, "reason": reason}
    )
    _write_version(versions_out, version, model, _version_meta(job, version, results), _feature_details(job))
    if promoted:
        _move_pointer(pointer_out, version, reason, active, run)
    _log("version %s: %s" % (version, reason))
    return {
        "model_id": job.model_id,
        "version": version,
        "metric": metric,
        "score": results["metrics"][metric],
        "metrics": results["metrics"],
        "promoted": promoted,
        "reason": reason,
        "active": version if promoted else active,
        "comparison": comparison,
    }


# -------------------------------------------------------------------------------------- version inputs


def _check_version_inputs(frame: Any, meta: Dict[str, Any], source: str, need_target: bool) -> None:
    """The data has every input column the version was trained on, numeric where it was numeric."""
    columns = list(frame.columns)
    for name in meta["features"]:
        if name not in columns:
            raise ModelInputError(
                "data %s: column %r, an input of model %s version %s, is missing.%s Add it in the prepare "
                "recipe (the version was trained on: %s)"
                % (
                    source,
                    name,
                    meta.get("model_id"),
                    meta.get("version"),
                    _suggestion(name, columns),
                    _preview(meta["features"]),
                )
            )
    categorical = set(meta.get("categorical") or [])
    numeric = [name for name in meta["features"] if name not in categorical]
    fix = "it was numeric when version %s was trained: clean it in the prepare recipe" % meta.get("version")
    _check_numeric(frame, numeric, source, fix)
    if need_target:
        _require_target(frame, meta["target"], source)


# -------------------------------------------------------------------------------------------- plots


def _new_figure(title: str) -> Tuple[Any, Any]:
    """A Figure on the Agg canvas, without pyplot's global state (nothing to close, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=PLOT_SIZE, dpi=PLOT_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=10)
    return figure, axes


def _plot_roc(is_positive: Any, scores: Any, title: str) -> Any:
    from sklearn.metrics import auc, roc_curve

    false_positive, true_positive, _ = roc_curve(is_positive, scores)
    figure, axes = _new_figure(title + ": ROC curve")
    axes.plot(false_positive, true_positive, label="AUC %.3f" % auc(false_positive, true_positive))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.legend(loc="lower right")
    return figure


def _plot_precision_recall(is_positive: Any, scores: Any, title: str) -> Any:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(is_positive, scores)
    figure, axes = _new_figure(title + ": precision-recall")
    label = "average precision %.3f" % average_precision_score(is_positive, scores)
    axes.plot(recall, precision, label=label)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.legend(loc="lower left")
    return figure


def _plot_confusion(actual: Any, predicted: Any, classes: List[Any], title: str) -> Any:
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(actual, predicted, labels=classes)
    figure, axes = _new_figure(title + ": confusion matrix")
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes)
    ticks = list(range(len(classes)))
    axes.set_xticks(ticks, [str(label) for label in classes])
    axes.set_yticks(ticks, [str(label) for label in classes])
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    threshold = counts.max() / 2.0
    cells = [(r, c) for r in ticks for c in ticks] if len(classes) <= 20 else []  # unreadable beyond
    for row, column in cells:
        value = int(counts[row, column])
        color = "white" if value > threshold else "black"
        axes.text(column, row, str(value), ha="center", va="center", color=color, fontsize=10)
    return figure


def _plot_residuals(actual: Any, predicted: Any, title: str) -> Any:
    figure, axes = _new_figure(title + ": residuals")
    axes.scatter(predicted, actual - predicted, s=8, alpha=0.6)
    axes.axhline(0.0, color="grey", linestyle="--")
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual - predicted")
    return figure


def _plot_predicted_vs_actual(actual: Any, predicted: Any, title: str) -> Any:
    figure, axes = _new_figure(title + ": predicted vs actual")
    axes.scatter(actual, predicted, s=8, alpha=0.6)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="grey", linestyle="--", label="perfect")
    axes.set_xlabel("actual")
    axes.set_ylabel("predicted")
    axes.legend(loc="upper left")
    return figure


def _plot_importance(ranking: List[Tuple[str, float]], method: str, title: str) -> Any:
    figure, axes = _new_figure(title + ": feature importance")
    names = [name[:40] for name, _ in reversed(ranking)]
    axes.barh(range(len(names)), [value for _, value in reversed(ranking)])
    axes.set_yticks(range(len(names)), names, fontsize=7)
    axes.set_xlabel(method)
    return figure


def _transformed_name(name: str) -> str:
    """'num__age' -> 'age', 'cat__city_Paris' -> 'city_Paris' (ColumnTransformer prefixes)."""
    return name.split("__", 1)[1] if "__" in name else name


def feature_importance(
    model: FittedModel, inputs: Any, actual: Any, seed: int
) -> Tuple[str, List[Tuple[str, float]]]:
    """(method, top features): the estimator's own importances or |coef_| on the transformed
    features, else permutation importance on the input columns (estimators without either)."""
    import numpy as np

    estimator = model.pipeline[-1]
    weights = getattr(estimator, "feature_importances_", None)
    method = "feature_importances_"
    if weights is None and getattr(estimator, "coef_", None) is not None:
        coefficients = np.abs(np.asarray(estimator.coef_, dtype=float))
        weights, method = coefficients.reshape(-1, coefficients.shape[-1]).mean(axis=0), "|coef_|"
    if weights is not None:
        names = [_transformed_name(str(name)) for name in model.pipeline[:-1].get_feature_names_out()]
        weights = weights if len(names) == len(weights) else None
    if weights is None:
        from sklearn.inspection import permutation_importance

        if len(inputs) > 5000:  # permutation cost grows with rows; a sample ranks features as well
            inputs = inputs.sample(5000, random_state=seed)
            actual = actual.loc[inputs.index]
        permuted = permutation_importance(
            model.pipeline, inputs, model.encode(actual), n_repeats=5, random_state=seed
        )
        names, weights, method = list(inputs.columns), permuted.importances_mean, "permutation importance"
    pairs = [(names[index], float(weights[index])) for index in range(len(names))]  # no zip(strict=): 3.8
    ranking = sorted(pairs, key=lambda pair: -abs(pair[1]))
    return method, ranking[:TOP_FEATURES]


def _evaluation_plots(
    model: FittedModel,
    inputs: Any,
    actual: Any,
    importance: Tuple[str, List[Tuple[str, float]]],
    out_dir: str,
    title: str,
) -> List[str]:
    """PNG plots of one evaluation, written to out_dir; returns their file names."""
    figures: Dict[str, Any] = {}
    predicted = model.predict(inputs)
    if model.task == "classification":
        classes = model.classes
        scores = model.positive_scores(inputs) if len(classes) == 2 else None
        if scores is not None:
            is_positive = (actual == classes[1]).to_numpy()
            figures["roc.png"] = _plot_roc(is_positive, scores, title)
            figures["precision_recall.png"] = _plot_precision_recall(is_positive, scores, title)
        figures["confusion_matrix.png"] = _plot_confusion(actual, predicted, classes, title)
    else:
        actual_values = actual.to_numpy(dtype=float)
        figures["residuals.png"] = _plot_residuals(actual_values, predicted, title)
        figures["predicted_vs_actual.png"] = _plot_predicted_vs_actual(actual_values, predicted, title)
    figures["feature_importance.png"] = _plot_importance(importance[1], importance[0], title)
    os.makedirs(out_dir, exist_ok=True)
    for name, figure in figures.items():
        figure.tight_layout()
        figure.savefig(os.path.join(out_dir, name), dpi=PLOT_DPI)
    return list(figures)


# ------------------------------------------------------------------------------------------- evaluate


def _evaluation_metric(definition: Optional[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    """The current definition's metric when it suits the version's task, else the version's own."""
    metric = (definition or {}).get("metric")
    if metric and metric in ml_catalog.METRICS[meta["task"]]:
        return str(metric)
    return str(meta["metric"])


def _champion_block(
    model_dir: str, version: str, frame: Any, target: str, source: str
) -> Optional[Dict[str, Any]]:
    """The active version's metrics on the same data, when another version is active."""
    active = active_version(model_dir)
    if active is None or active == version:
        return None
    try:
        champion = FittedModel.load(_version_dir(model_dir, active))
        _check_version_inputs(frame, champion.meta, source, need_target=False)
        features = champion.meta["features"]
        return {"version": active, "metrics": compute_metrics(champion, frame[features], frame[target])}
    except Exception as exc:  # noqa: BLE001 - an unusable champion is reported, not fatal
        _log("WARNING: the active version %s could not be scored on this data: %s" % (active, exc))
        return {"version": active, "metrics": None, "error": "%s: %s" % (type(exc).__name__, exc)}


def _decision_hint(
    version: str, metrics: Dict[str, Any], champion: Optional[Dict[str, Any]], metric: str, greater: bool
) -> Optional[Dict[str, Any]]:
    """Which of the evaluated and the active version is better on the metric (promote reads this)."""
    if not champion or champion.get("metrics") is None:
        return None
    scores = (metrics.get(metric), champion["metrics"].get(metric))
    better, text = _comparison_text(
        ("candidate", "active"), (version, champion["version"]), metric, scores, greater
    )
    outcome = "promoting it would replace the active version" if better else "the active version stays"
    return {
        "metric": metric,
        "greater_is_better": greater,
        "candidate_score": scores[0],
        "active_score": scores[1],
        "better": "candidate" if better else "active",
        "text": "%s: %s" % (text, outcome),
    }


def _measure_version(model: FittedModel, frame: Any, metric: str, out_dir: str) -> Dict[str, Any]:
    """Metrics, feature importance and plots of one version on labelled rows (plots go to out_dir)."""
    meta = model.meta
    inputs, actual = frame[meta["features"]], frame[meta["target"]]
    metrics = compute_metrics(model, inputs, actual)
    _log("evaluated %s on %d rows: %s %s" % (meta["version"], len(frame), metric, _fmt(metrics.get(metric))))
    seed = int(meta.get("definition", {}).get("split", {}).get("seed", 42))
    importance = feature_importance(model, inputs, actual, seed)
    title = "%s %s" % (meta.get("model_id"), meta["version"])
    return {
        "metric": metric,
        "greater_is_better": _greater_is_better(meta["task"], metric),
        "metrics": metrics,
        "feature_importance": {
            "method": importance[0],
            "top": [{"feature": name, "importance": value} for name, value in importance[1]],
        },
        "plots": _evaluation_plots(model, inputs, actual, importance, out_dir, title),
    }


def evaluate(
    definition: Optional[Dict[str, Any]],
    data_path: str,
    model_dir: str,
    versions_out: str,
    version: str = "latest",
    compare_with_active: bool = True,
    run_info: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Metrics and plots of a saved version on labelled data, staged as a new evaluation of it; with
    compare_with_active, the active version is scored on the same rows for DSSPromoteModelOperator.
    definition (optional) only picks the metric of the decision hint; the version keeps its own."""
    model_dir, versions_out = os.fspath(model_dir), os.fspath(versions_out)
    chosen = resolve_version(model_dir, version)
    model = FittedModel.load(_version_dir(model_dir, chosen))
    meta = model.meta
    frame, data = load_data(os.fspath(data_path))
    _check_version_inputs(frame, meta, data["label"], need_target=True)
    taken = _ids_in(os.path.join(_version_dir(model_dir, chosen), "evaluations"), EVALUATION_PATTERN)
    evaluation = new_id(
        "e", taken + _ids_in(os.path.join(versions_out, chosen, "evaluations"), EVALUATION_PATTERN)
    )
    out_dir = os.path.join(versions_out, chosen, "evaluations", evaluation)
    with _sized_thread_pools():
        record = _measure_version(model, frame, _evaluation_metric(definition, meta), out_dir)
        champion = (
            _champion_block(model_dir, chosen, frame, meta["target"], data["label"])
            if compare_with_active
            else None
        )
    hint = _decision_hint(chosen, record["metrics"], champion, record["metric"], record["greater_is_better"])
    if hint:
        _log(hint["text"])
    record.update(
        evaluation=evaluation,
        version=chosen,
        model_id=meta.get("model_id"),
        created_at=_utc_now().isoformat(),
        data=data,
        champion=champion,
        decision_hint=hint,
        run=_run_ids(run_info or {}),
    )
    _write_json(os.path.join(out_dir, "metrics.json"), record)
    relative_dir = "/".join(("versions", chosen, "evaluations", evaluation))
    return {
        "model_id": meta.get("model_id"),
        "version": chosen,
        "evaluation": evaluation,
        "metrics": record["metrics"],
        "plots": ["%s/%s" % (relative_dir, name) for name in record["plots"]],
        "champion": champion,
        "decision_hint": hint,
    }


# ---------------------------------------------------------------------------------------------- score


def _probability_columns(model: FittedModel) -> List[str]:
    """'probability' (of classes[1]) for a binary model, 'probability_<class>' for each class otherwise."""
    if model.task != "classification" or not hasattr(model.pipeline, "predict_proba"):
        return []
    if len(model.classes) == 2:
        return ["probability"]
    return ["probability_%s" % label for label in model.classes]


def _with_predictions(model: FittedModel, frame: Any, version: str) -> Any:
    """The input rows with prediction, probability column(s) and model_version appended."""
    columns = ["prediction", *_probability_columns(model), "model_version"]
    added: Dict[str, Any] = {name: [] for name in columns}  # no rows to score: empty columns
    if len(frame):
        inputs = frame[model.meta["features"]]
        added["prediction"] = model.predict(inputs)
        probabilities = model.probabilities(inputs)
        if probabilities is not None:
            names = columns[1:-1]
            first = len(model.classes) - len(names)  # binary: only the positive class's column
            for offset, name in enumerate(names):
                added[name] = probabilities[:, first + offset]
        added["model_version"] = version
    replaced = [name for name in columns if name in frame.columns]
    if replaced:
        _log("WARNING: input column(s) %s replaced by the model's output" % ", ".join(replaced))
    scored = frame.copy()
    for name in columns:
        scored[name] = added[name]
    return scored


def score(
    data_path: str,
    model_dir: str,
    predictions_out: str,
    version: str = "active",
    run_info: Optional[Dict[str, Any]] = None,
    output_format: str = "csv",
) -> Dict[str, Any]:
    """Predict with a saved version (default: the active one) and stage the predictions file."""
    if output_format not in OUTPUT_FORMATS:
        raise ModelInputError(
            "output_format %r is not one of %s.%s"
            % (output_format, ", ".join(OUTPUT_FORMATS), _suggestion(output_format, OUTPUT_FORMATS))
        )
    model_dir = os.fspath(model_dir)
    chosen = resolve_version(model_dir, version or "active")
    model = FittedModel.load(_version_dir(model_dir, chosen))
    frame, data = load_data(os.fspath(data_path), allow_empty=True)
    _check_version_inputs(frame, model.meta, data["label"], need_target=False)
    with _sized_thread_pools():
        scored = _with_predictions(model, frame, chosen)
    name = "predictions." + output_format
    os.makedirs(os.fspath(predictions_out), exist_ok=True)
    path = os.path.join(os.fspath(predictions_out), name)
    if output_format == "csv":
        scored.to_csv(path, index=False)
    else:
        scored.to_parquet(path, index=False)
    _log("scored %d rows with %s -> %s" % (len(scored), chosen, name))
    return {
        "model_id": model.meta.get("model_id"),
        "version": chosen,
        "rows": int(len(scored)),
        "output": name,
        "columns": [str(column) for column in scored.columns],
    }


# -------------------------------------------------------------------------------------------- promote


def _evaluation_evidence(model_dir: str, candidate: str, active: str) -> Optional[Dict[str, Any]]:
    """The candidate's newest evaluation that scored the current active version on the same data."""
    directory = os.path.join(_version_dir(model_dir, candidate), "evaluations")
    for evaluation in reversed(_ids_in(directory, EVALUATION_PATTERN)):
        path = os.path.join(directory, evaluation, "metrics.json")
        if not os.path.isfile(path):
            continue
        record = _read_json(path)
        champion = record.get("champion") or {}
        if champion.get("version") == active and champion.get("metrics") is not None:
            metric = record["metric"]
            return {
                "source": "evaluation %s" % evaluation,
                "metric": metric,
                "scores": (record["metrics"].get(metric), champion["metrics"].get(metric)),
            }
    return None


def _training_evidence(meta: Dict[str, Any], active: str) -> Optional[Dict[str, Any]]:
    """The comparison made at training time, if its champion is still the active version."""
    comparison = meta.get("comparison") or {}
    if comparison.get("champion") != active:
        return None
    return {
        "source": "training comparison on the %s" % comparison.get("data"),
        "metric": comparison["metric"],
        "scores": (comparison.get("challenger_score"), comparison.get("champion_score")),
    }


def _promotion_decision(
    model_dir: str, candidate: str, active: Optional[str], meta: Dict[str, Any], force: bool
) -> Tuple[bool, str]:
    """(move the pointer, why) for a promote task."""
    if force:
        return True, "forced by the trigger"
    if active is None:
        return True, "no active version"
    if candidate == active:
        return False, "%s is already the active version" % candidate
    evidence = _evaluation_evidence(model_dir, candidate, active) or _training_evidence(meta, active)
    if evidence is None:
        return False, (
            "no comparison against the active version %s: run DSSEvaluateModelOperator with "
            "compare_with_active first or force" % active
        )
    greater = _greater_is_better(meta["task"], evidence["metric"])
    better, text = _comparison_text(
        ("candidate", "active"), (candidate, active), evidence["metric"], evidence["scores"], greater
    )
    if better:
        return True, "%s: %s" % (evidence["source"], text)
    return False, "not promoted (%s): %s; the active version stays %s" % (evidence["source"], text, active)


def promote(
    model_dir: str,
    pointer_out: str,
    version: str = "latest",
    force: bool = False,
    run_info: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Make a saved version the active one when it beat the active version on a recorded comparison
    (an evaluation, else the training comparison), or when forced."""
    model_dir = os.fspath(model_dir)
    candidate = resolve_version(model_dir, version)
    active = active_version(model_dir)
    meta: Dict[str, Any] = _read_json(os.path.join(_version_dir(model_dir, candidate), "meta.json"))
    promoted, reason = _promotion_decision(model_dir, candidate, active, meta, bool(force))
    if promoted:
        _move_pointer(os.fspath(pointer_out), candidate, reason, active, run_info or {})
    _log("promote %s: %s" % (candidate, reason))
    return {
        "model_id": meta.get("model_id"),
        "version": candidate,
        "promoted": promoted,
        "reason": reason,
        "active": candidate if promoted else active,
        "previous": active,
    }


# ------------------------------------------------------------------------------------- recipe entry


def _run_info(params: Dict[str, Any]) -> Dict[str, Any]:
    """The operator's run ids, plus the image this container runs (DSS_IMAGE; unset in a local venv)."""
    info = dict(params.get("run") or {}, model_id=params.get("model_id"))
    info.setdefault("image", os.environ.get("DSS_IMAGE"))
    return info


def _run_train(recipe: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    return train(
        params.get("definition") or {},
        str(recipe.input_path("data")),
        str(recipe.input_path("models")),
        str(recipe.output_dir("versions")),
        str(recipe.output_dir("pointer")),
        run_info=_run_info(params),
        promotion=params.get("promotion") or "always",
        model_id=params.get("model_id"),
    )


def _run_evaluate(recipe: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    compare = params.get("compare_with_active")
    return evaluate(
        params.get("definition"),
        str(recipe.input_path("data")),
        str(recipe.input_path("models")),
        str(recipe.output_dir("versions")),
        version=params.get("version") or "latest",
        compare_with_active=True if compare is None else bool(compare),
        run_info=_run_info(params),
    )


def _run_score(recipe: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    return score(
        str(recipe.input_path("data")),
        str(recipe.input_path("models")),
        str(recipe.output_dir("predictions")),
        version=params.get("version") or "active",
        run_info=_run_info(params),
        output_format=params.get("output_format") or "csv",
    )


def _run_promote(recipe: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    return promote(
        str(recipe.input_path("models")),
        str(recipe.output_dir("pointer")),
        version=params.get("version") or "latest",
        force=bool(params.get("force")),
        run_info=_run_info(params),
    )


ACTIONS: Dict[str, Callable[[Any, Dict[str, Any]], Dict[str, Any]]] = {
    "train": _run_train,
    "evaluate": _run_evaluate,
    "score": _run_score,
    "promote": _run_promote,
}


def main() -> None:
    """Recipe entry point: the params say which action runs; its result becomes the task's XCom."""
    params = dss_recipe.params()
    action = params.get("action")
    if action not in ACTIONS:
        raise ModelInputError(
            "params: action %r is not one of %s.%s"
            % (action, ", ".join(ACTIONS), _suggestion(action, list(ACTIONS)))
        )
    _log("%s model %s" % (action, params.get("model_id") or "?"))
    dss_recipe.set_result(ACTIONS[action](dss_recipe, params))


if __name__ == "__main__":
    main()
