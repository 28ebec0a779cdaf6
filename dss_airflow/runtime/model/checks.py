"""Checks of the model definition and of the data's columns, made before anything is fitted or scored, so
a mistake costs seconds and its message says how to fix it."""

from typing import Any, Dict, List, Optional, Tuple

from .. import ml_catalog
from ..errors import ModelInputError
from .common import DEFAULT_SPLIT, _names, _plain, _preview, _suggestion


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
