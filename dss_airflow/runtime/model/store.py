"""The model store: version and evaluation ids, the versions of a model directory, its active pointer, and
writing a new version (all staged: nothing is ever written into model_dir)."""

import datetime
import os
import platform
import random
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from .. import ml_catalog
from ..errors import ModelInputError
from .common import (
    ID_STAMP_FORMAT,
    VERSION_PATTERN,
    _log,
    _preview,
    _read_json,
    _run_ids,
    _suggestion,
    _utc_now,
    _write_json,
)
from .estimators import FittedModel, _Training

if TYPE_CHECKING:
    import re


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
