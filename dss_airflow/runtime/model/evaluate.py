"""The evaluate action: metrics, feature importance and plots of a saved version on labelled data, with the
active version scored on the same rows."""

import os
from typing import Any, Dict, Optional

from .. import ml_catalog
from .checks import _check_version_inputs
from .common import EVALUATION_PATTERN, _fmt, _log, _run_ids, _utc_now, _write_json
from .data import load_data
from .estimators import FittedModel, _sized_thread_pools
from .metrics import _comparison_text, _greater_is_better, compute_metrics
from .plots import _evaluation_plots, feature_importance
from .store import _ids_in, _version_dir, active_version, new_id, resolve_version


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
