"""What every module of the model engine shares: its constants and small formatting and file helpers."""

import datetime
import difflib
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence

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


def _names(value: Any) -> List[str]:
    """A list of column names; a lone name (``categorical: city``) counts as a list of one."""
    return [value] if isinstance(value, str) else [str(name) for name in value]
