"""Resource quantities: Kubernetes quantities ("500m", "2Gi") and Docker sizes ("512m", "2g").

Parsed here with the standard library so that validating a config never imports the kubernetes client
(3 s at DAG-parse time). The Kubernetes grammar follows apimachinery's ``resource.Quantity``; the unit tests
check it against ``kubernetes.utils.parse_quantity``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_K8S_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}

_DOCKER_SIZE = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>[bkmgt]?)$", re.IGNORECASE)
_DOCKER_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_k8s_quantity(value: str | int | float) -> Decimal:
    """The value of a Kubernetes quantity in base units (cores, bytes); ValueError when not a quantity."""
    text = str(value).strip() if isinstance(value, int | float) else value
    match = _K8S_QUANTITY.match(text)
    if not match:
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity: write a number with an optional suffix "
            "(Ki, Mi, Gi, Ti for bytes; m for milli-cores), e.g. '500m', '2', '512Mi', '2Gi'"
        )
    number = Decimal(match["number"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    try:
        return number * (Decimal(10) ** int(suffix[1:]))
    except (InvalidOperation, ValueError) as exc:  # pragma: no cover - the regex guarantees digits
        raise ValueError(f"{value!r} has a bad exponent") from exc


def parse_docker_size(value: str | int) -> int:
    """Bytes in a Docker size such as '512m' or '2g' (binary units, as the Docker CLI reads them)."""
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{value!r} is not a positive size")
        return value
    match = _DOCKER_SIZE.match(value.strip())
    if not match:
        raise ValueError(
            f"{value!r} is not a Docker size: write a number with an optional unit b, k, m, g or t "
            "and no space, e.g. '512m' or '2g'"
        )
    size = int(Decimal(match["number"]) * _DOCKER_UNITS[match["unit"].lower()])
    if size <= 0:
        raise ValueError(f"{value!r} is not a positive size")
    return size


def docker_size_text(size: int) -> str:
    """A byte count as a Docker size ('512m', '2g'; bytes when it is no whole unit), as admins write it."""
    for unit in ("t", "g", "m", "k"):
        factor = _DOCKER_UNITS[unit]
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size} bytes"
