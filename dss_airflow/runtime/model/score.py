"""The score action: predictions of a saved version (by default the active one), staged as one file."""

import os
from typing import Any, Dict, List, Optional

from ..errors import ModelInputError
from .checks import _check_version_inputs
from .common import OUTPUT_FORMATS, _log, _suggestion
from .data import load_data
from .estimators import FittedModel, _sized_thread_pools
from .store import _version_dir, resolve_version


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
