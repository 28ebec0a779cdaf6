"""The PNG plots of an evaluation (ROC, precision-recall, confusion matrix, residuals, feature importance),
drawn without pyplot's global state."""

import os
from typing import Any, Dict, List, Tuple

from .common import PLOT_DPI, PLOT_SIZE, TOP_FEATURES
from .estimators import FittedModel


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
