"""The recipe side of the engine: dss_model.py calls main(), which runs the action named by the params
through dss_recipe and returns its result as the task's XCom."""

import os
from typing import Any, Callable, Dict

from .. import dss_recipe
from ..errors import ModelInputError
from .common import _log, _suggestion
from .evaluate import evaluate
from .promote import promote
from .score import score
from .train import train


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
