"""CUDA base images: NVIDIA's runtime wheels from the package index layered on the plain base image, the
library loadable in a container of it (no GPU needed to load it; running on one is untested here)."""

from __future__ import annotations

import pytest

from dss_airflow.config.loader import load_catalog
from dss_airflow.images.base import build_base_image
from dss_airflow.images.cuda import CUDA_LABEL
from tests.helpers import write_config

pytestmark = pytest.mark.docker

LOAD = "import ctypes; ctypes.CDLL('libcudart.so.12'); print('libcudart loaded')"


def test_a_cuda_base_image_loads_libcudart_and_the_plain_one_stays_plain(tmp_path, base_image, docker_client):
    config = f"""
        base_images:
          plain: {{image: "{base_image}"}}
          cuda12: {{image: "dss-airflow-test-cuda:12", from: "{base_image}", cuda: "12"}}
        execution_configs:
          cpu: {{type: docker, base_image: plain}}
          gpu: {{type: docker, base_image: cuda12, runtime: nvidia, gpus: {{count: all}}}}
        code_envs: {{plain: {{}}}}
    """
    catalog = load_catalog(write_config(tmp_path, {"c.yaml": config}))
    build_base_image(catalog, "cuda12", progress=lambda *args: None)
    image = docker_client.images.get("dss-airflow-test-cuda:12")
    assert image.labels[CUDA_LABEL].startswith("nvidia_cuda_runtime_cu12==12."), image.labels
    output = docker_client.containers.run("dss-airflow-test-cuda:12", ["python3", "-c", LOAD], remove=True)
    assert output.decode().strip() == "libcudart loaded"
    assert (
        docker_client.containers.run("dss-airflow-test-cuda:12", ["id", "-u"], remove=True).strip() == b"1000"
    )
    with pytest.raises(Exception, match="libcudart.so.12"):
        docker_client.containers.run(base_image, ["python3", "-c", LOAD], remove=True)
    again = []
    build_base_image(catalog, "cuda12", progress=lambda *args: again.append(args[0]))
    assert "cached" in again, "same wheels, same Dockerfile: the image is reused"
