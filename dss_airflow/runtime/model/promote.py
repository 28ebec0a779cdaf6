"""The promote action: move the active pointer to a version that beat the active one on a recorded
comparison, or when forced."""

import os
from typing import Any, Dict, Optional, Tuple

from .common import EVALUATION_PATTERN, _log, _read_json
from .metrics import _comparison_text, _greater_is_better
from .store import _ids_in, _move_pointer, _version_dir, active_version, resolve_version


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
