"""The train action: fit a new version, compare it with the champion, stage it and maybe the pointer."""

import os
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ModelInputError
from .checks import _checked_columns, _label_classes, normalized_definition
from .common import PROMOTION_POLICIES, SCALED_ALGORITHMS, VERSION_PATTERN, _log, _preview, _suggestion
from .data import load_data
from .estimators import (
    FittedModel,
    _fit_and_measure,
    _make_estimator,
    _make_pipeline,
    _sized_thread_pools,
    _split,
    _Training,
)
from .metrics import _comparison_text, compute_metrics
from .store import _ids_in, _move_pointer, _version_dir, _version_meta, _write_version, active_version, new_id


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


def _feature_details(job: _Training) -> List[Dict[str, str]]:
    return [
        {
            "name": name,
            "dtype": str(job.train_rows[name].dtype),
            "role": "categorical" if name in job.categorical else "numeric",
        }
        for name in job.features
    ]


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
