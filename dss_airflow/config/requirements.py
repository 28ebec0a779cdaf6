"""Validation of package-list lines before they reach uv, pip or a Dockerfile.

A package list is admin input that ends up in a build command: a line must be one PEP 508 requirement and
nothing else. Options (``--index-url``), shell syntax (``; rm -rf``, ``$(...)``, backticks, pipes) and
local paths (not supported in containers, as in DSS) are refused with the offending line in the message.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

_SHELL = re.compile(r"[`$|&\n\r\\]|\$\(|&&|\|\|")


def check_requirement(line: str) -> str:
    """Return ``line`` stripped when it is a single safe requirement; ValueError naming it otherwise."""
    from packaging.requirements import InvalidRequirement  # imported when validating, not in every task
    from packaging.requirements import Requirement as PEP508Requirement

    text = line.strip()
    if not text:
        raise ValueError("empty requirement line")
    if text.startswith("-"):
        raise ValueError(
            f"{text!r} is a pip option, not a package; index URLs and flags are set by the admin "
            "in the base image or exec config, never in a package list"
        )
    if _SHELL.search(text):
        raise ValueError(f"{text!r} contains shell syntax ($, `, |, &, \\); write one package per line")
    try:
        requirement = PEP508Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(f"{text!r} is not a valid requirement: {exc}") from exc
    url = requirement.url or ""
    if url.startswith("file:") or url.startswith("/") or url.startswith("."):
        raise ValueError(f"{text!r} installs from a local path, which containers cannot see")
    return text


def requirement_name(line: str) -> str:
    """The canonical distribution name of a (checked) requirement line: ``Scikit_Learn>=1`` → scikit-learn."""
    from packaging.requirements import Requirement as PEP508Requirement
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(PEP508Requirement(line).name))


def read_requirements_file(path: Path) -> list[str]:
    """Requirement lines of a requirements file, comments and blanks dropped, each line checked."""
    lines: list[str] = []
    problems: list[str] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        try:
            lines.append(check_requirement(text))
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
    if problems:  # every bad line at once: an admin fixes the file in one go
        raise ValueError("; ".join(problems))
    return lines
