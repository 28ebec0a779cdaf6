"""Smoke test of a freshly built code-env image, run inside it before it becomes current. Stdlib only.

Imports the top-level modules of every distribution in the image's lock and runs ``pip check``; prints a
JSON summary and exits 1 on any failure, so a broken image never replaces a working one. A module that
fails only because it imports *another* top-level module that is not installed (matplotlib-inline without
matplotlib) uses an optional dependency its distribution does not declare: that is listed, not a failure
(``pip check`` fails on any missing *declared* dependency).

After an incremental build, ``DSS_SMOKE_CHANGED`` names the distributions that changed: only those and
every distribution that depends on them (transitively) are imported, since the rest is byte-identical
to the previous, already tested image. ``pip check`` always covers the whole env.
"""

import importlib
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from typing import Dict, List, Optional, Set, Tuple

LOCK = "/opt/dss/requirements.lock"
R_PACKAGES = "/opt/dss/r-packages.txt"  # written by the build of an env with r_packages


def top_level_modules(distribution: str) -> List[str]:
    dist = metadata.distribution(distribution)
    declared = dist.read_text("top_level.txt")
    if declared:
        names = [line.strip() for line in declared.splitlines() if line.strip()]
    else:
        names = []
        for file in dist.files or []:
            first = file.parts[0]
            if first.endswith((".dist-info", ".data")) or first in ("..", "bin", "__pycache__"):
                continue
            name = first[:-3] if first.endswith(".py") else first
            if "." not in name and name.isidentifier() and name not in names:
                names.append(name)
    return [name.replace("/", ".") for name in names if not name.startswith("_")]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def with_dependents(changed: Set[str], pins: List[str]) -> Set[str]:
    """``changed`` plus every pinned distribution that requires one of them, directly or not."""
    requires: Dict[str, Set[str]] = {}
    for name in pins:
        try:
            lines = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            lines = []
        names = (re.split(r"[ ;<>=!~\[(]", line, maxsplit=1)[0] for line in lines)
        requires[canonical(name)] = {canonical(required) for required in names}
    selected = set(changed)
    grew = True
    while grew:
        grew = False
        for name, needs in requires.items():
            if name not in selected and needs & selected:
                selected.add(name)
                grew = True
    return selected


def import_problem(module: str) -> Tuple[Optional[str], Optional[str]]:
    """(failure, optional dependency missing) for one module; (None, None) when it imports."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing and missing != module.split(".")[0]:
            return None, "%s needs %s, which is not installed (an undeclared optional dependency)" % (
                module,
                missing,
            )
        return "%s: %s" % (type(exc).__name__, exc), None
    except Exception as exc:  # noqa: BLE001 - every failure is reported
        return "%s: %s" % (type(exc).__name__, exc), None
    return None, None


def main() -> int:
    with open(LOCK, encoding="utf-8") as handle:
        pins = [line.split("==", 1)[0].strip() for line in handle if "==" in line]
    changed = os.environ.get("DSS_SMOKE_CHANGED")
    if changed is not None:
        selected = with_dependents({canonical(n) for n in changed.split(",") if n}, pins)
        pins = [name for name in pins if canonical(name) in selected]
    failures = []
    imported = []
    optional = []
    for distribution in pins:
        try:
            modules = top_level_modules(distribution)
        except metadata.PackageNotFoundError:
            failures.append("%s: not installed" % distribution)
            continue
        for module in modules:
            failure, missing_optional = import_problem(module)
            if failure is not None:
                failures.append("import %s (%s): %s" % (module, distribution, failure))
            elif missing_optional is not None:
                optional.append(missing_optional)
            else:
                imported.append(module)
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    if check.returncode != 0:
        failures.append("pip check: " + (check.stdout + check.stderr).strip())
    r_loaded = load_r_packages(failures)
    summary = {"imported": imported, "optional_missing": optional, "failures": failures}
    if r_loaded:
        summary["r_loaded"] = r_loaded
    print(json.dumps(summary))
    return 1 if failures else 0


def load_r_packages(failures: List[str]) -> List[str]:
    """``library()`` of every R package the env declares (none: nothing to do): the names that loaded;
    each failure appended to ``failures``."""
    if not os.path.exists(R_PACKAGES):
        return []
    with open(R_PACKAGES, encoding="utf-8") as handle:
        names = [line.strip() for line in handle if line.strip()]
    loaded = []
    for name in names:
        probe = subprocess.run(
            ["Rscript", "-e", "suppressPackageStartupMessages(library(%s))" % name],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0:
            loaded.append(name)
        else:
            failures.append("library(%s): %s" % (name, (probe.stderr or probe.stdout).strip()[-500:]))
    return loaded


def _runtime_off_path() -> None:
    """Run as a script, this directory is first on sys.path: the runtime's own modules (errors, model...)
    would be imported instead of the env's modules of the same name."""
    here = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry) != here]


if __name__ == "__main__":
    _runtime_off_path()
    sys.exit(main())
