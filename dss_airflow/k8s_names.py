"""Kubernetes names and labels from free text (dag ids, task ids, env names): the one sanitizer.

Pods, SparkApplications, build Jobs and their labels all go through these, so one dag id becomes the same
label everywhere and a shortened name stays unique (a hash of the original is appended when it had to
change). Pure functions; no Kubernetes import.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Our label keys on Kubernetes objects: ``dss-airflow/dag-id`` etc.
LABEL_KEY_PREFIX = "dss-airflow/"
#: Longest label value or DNS label.
MAX_NAME = 63


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def label_value(value: str) -> str:
    """A valid label value: <=63 chars of [A-Za-z0-9_.-], alphanumeric at both ends; lossy → hash suffix."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip("-_.")
    if safe == value and len(safe) <= MAX_NAME:
        return safe
    head = safe[: MAX_NAME - 9].rstrip("-_.")
    return f"{head}-{_digest(value)}" if head else _digest(value)


def dns_label(*parts: str, max_length: int = MAX_NAME) -> str:
    """A DNS label (lower-case letters, digits, '-', at most ``max_length``) from parts joined by '-';
    unique by a hash suffix whenever the text had to change or be shortened."""
    text = "-".join(parts)
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if name == text and len(name) <= max_length:
        return name
    head = name[: max_length - 9].rstrip("-")
    return f"{head}-{_digest(text)}" if head else f"x{_digest(text)}"


def label_key(name: str) -> str:
    """``dag_id`` → ``dss-airflow/dag-id`` (the name part: letters, digits, '-', '.')."""
    cleaned = re.sub(r"[^A-Za-z0-9.-]+", "-", name.replace("_", "-")).strip("-.")[:MAX_NAME]
    return LABEL_KEY_PREFIX + (cleaned or "label")


def k8s_labels(labels: Mapping[str, str], prefix: str = "") -> dict[str, str]:
    """Our ``<prefix>dag_id`` style labels as Kubernetes labels: keys and values made valid."""
    return {label_key(key.removeprefix(prefix)): label_value(str(value)) for key, value in labels.items()}
