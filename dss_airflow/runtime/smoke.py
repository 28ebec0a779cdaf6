"""Smoke test of a freshly built code-env image, run inside it before it becomes current. Stdlib only.

Imports the top-level modules of every distribution in the image's lock and runs ``pip check``; prints a
JSON summary and exits 1 on any failure, so a broken image never replaces a working one.

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
from typing import Dict, List, Set

LOCK = "/opt/dss/requirements.lock"


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


def main() -> int:
    with open(LOCK, encoding="utf-8") as handle:
        pins = [line.split("==", 1)[0].strip() for line in handle if "==" in line]
    changed = os.environ.get("DSS_SMOKE_CHANGED")
    if changed is not None:
        selected = with_dependents({canonical(n) for n in changed.split(",") if n}, pins)
        pins = [name for name in pins if canonical(name) in selected]
    failures = []
    imported = []
    for distribution in pins:
        try:
            modules = top_level_modules(distribution)
        except metadata.PackageNotFoundError:
            failures.append("%s: not installed" % distribution)
            continue
        for module in modules:
            try:
                importlib.import_module(module)
                imported.append(module)
            except Exception as exc:  # noqa: BLE001 - every failure is reported
                failures.append("import %s (%s): %s: %s" % (module, distribution, type(exc).__name__, exc))
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    if check.returncode != 0:
        failures.append("pip check: " + (check.stdout + check.stderr).strip())
    print(json.dumps({"imported": imported, "failures": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
