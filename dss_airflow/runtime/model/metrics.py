"""The metrics of a fitted model on labelled rows, and how two scores compare.

Independent of estimators.py (which imports this module): a model is anything shaped like
:class:`Predictor`.
"""

from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

from .. import ml_catalog
from .common import _fmt, _number


class Predictor(Protocol):
    """What the metrics read of a fitted model (estimators.FittedModel is one)."""

    task: str

    @property
    def classes(self) -> List[Any]: ...

    def predict(self, inputs: Any) -> Any: ...

    def probabilities(self, inputs: Any) -> Any: ...

    def class_scores(self, inputs: Any) -> Any: ...


def _safe_metric(compute: Callable[[], Any]) -> Optional[float]:
    """A metric that is undefined on this data (one class in the test split...) becomes None."""
    try:
        return _number(compute())
    except (ValueError, TypeError, IndexError):
        return None


def _classification_metrics(model: Predictor, inputs: Any, actual: Any) -> Dict[str, Optional[float]]:
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


def _regression_metrics(model: Predictor, inputs: Any, actual: Any) -> Dict[str, Optional[float]]:
    from sklearn import metrics as sk

    predicted = model.predict(inputs)
    return {
        "r2": _safe_metric(lambda: sk.r2_score(actual, predicted)),
        "rmse": _safe_metric(lambda: sk.mean_squared_error(actual, predicted) ** 0.5),
        "mae": _safe_metric(lambda: sk.mean_absolute_error(actual, predicted)),
    }


def compute_metrics(model: Predictor, inputs: Any, actual: Any) -> Dict[str, Optional[float]]:
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
