"""Our stdlib quantity parser agrees with the kubernetes client's, without importing it at parse time."""

from __future__ import annotations

from decimal import Decimal

import pytest
from kubernetes.utils import parse_quantity

from dss_airflow.config.quantities import parse_docker_size, parse_k8s_quantity


@pytest.mark.parametrize(
    "value",
    [
        "1",
        "0.5",
        "500m",
        "2",
        "128974848",
        "129e6",
        "129M",
        "123Mi",
        "2Gi",
        "1Ki",
        "1.5Gi",
        "100n",
        "1E",
        "7u",
    ],
)
def test_k8s_quantities_match_the_kubernetes_client(value):
    assert parse_k8s_quantity(value) == Decimal(parse_quantity(value))


@pytest.mark.parametrize("value", ["2 GB", "2GB", "1.5 cores", "", "Gi", "1Gb", "--1", "1..5"])
def test_k8s_non_quantities_are_refused_by_both(value):
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        parse_k8s_quantity(value)
    with pytest.raises(ValueError, match="."):  # the client's messages vary by input
        parse_quantity(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("512m", 512 * 2**20),
        ("2g", 2 * 2**30),
        ("2G", 2 * 2**30),
        ("1024", 1024),
        ("1.5g", int(1.5 * 2**30)),
        (64, 64),
    ],
)
def test_docker_sizes(value, expected):
    assert parse_docker_size(value) == expected


@pytest.mark.parametrize("value", ["2 GB", "2gb", "-1g", "0", "lots"])
def test_bad_docker_sizes(value):
    with pytest.raises(ValueError, match="not a"):
        parse_docker_size(value)
