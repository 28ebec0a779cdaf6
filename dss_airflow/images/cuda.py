"""The CUDA layer of a base image (``cuda: "12"``): NVIDIA's runtime libraries from the package index's
wheels (``nvidia-cuda-runtime-cu12``, plus ``cuda_libraries`` such as cublas or cudnn), the route of DSS's
"CUDA support for Torch 2 with PyPI NVIDIA packages". uv installs them on the build host into the build
context (the image needs no pip), the Dockerfile copies them to ``/opt/dss/cuda`` and registers their
library directories with the dynamic loader, so ``libcudart.so.12`` loads in any process of the image, a
code env's included. No GPU is needed to build or load them; using one needs the host's driver and the
execution config's ``runtime: nvidia``/``gpus``.
"""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

from dss_airflow.errors import DSSAirflowError

if TYPE_CHECKING:
    from pathlib import Path

    from dss_airflow.config.models import BaseImage

CUDA_IN_IMAGE = "/opt/dss/cuda"
CUDA_LABEL = "dss_airflow.cuda"
#: manylinux wheels for x86-64; the NVIDIA wheels are py3-none, whatever the image's Python.
PLATFORM = "x86_64-manylinux_2_17"


def cuda_requirements(base: BaseImage) -> list[str]:
    assert base.cuda is not None
    major = base.cuda
    return [f"nvidia-cuda-runtime-cu{major}", *(f"nvidia-{name}-cu{major}" for name in base.cuda_libraries)]


def install_cuda(base: BaseImage, target: Path) -> list[str]:
    """Install the wheels into ``target``; the installed distributions (``name==version``), sorted."""
    from uv import find_uv_bin

    command = [
        str(find_uv_bin()), "pip", "install", "--target", str(target), "--python-version", "3.11",
        "--python-platform", PLATFORM, "--quiet", *cuda_requirements(base),
    ]  # fmt: skip
    if base.pip_index_url:
        command += ["--index-url", base.pip_index_url]
    env = {**os.environ, "UV_NO_PROGRESS": "1", "UV_PYTHON_DOWNLOADS": "never"}
    completed = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise DSSAirflowError(
            f"installing the CUDA {base.cuda} runtime wheels for {base.image} failed:\n{tail}"
        )
    installed = []
    for info in sorted(target.glob("*.dist-info")):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        installed.append(f"{name}=={version}")
    return installed


def library_dirs(target: Path) -> list[str]:
    """The wheels' library directories, as paths in the image."""
    return sorted(
        f"{CUDA_IN_IMAGE}/{path.relative_to(target).as_posix()}" for path in target.glob("nvidia/*/lib")
    )


def dockerfile_lines(lib_dirs: list[str], installed: list[str]) -> list[str]:
    """Copy the installed tree in, register its libraries with ldconfig, label what it holds."""
    conf = "\\n".join(lib_dirs)
    return [
        f"COPY cuda {CUDA_IN_IMAGE}",
        f"RUN chmod -R a+rX {CUDA_IN_IMAGE}"
        f" && printf '{conf}\\n' > /etc/ld.so.conf.d/dss-cuda.conf && ldconfig",
        f"ENV DSS_CUDA_RUNTIME={CUDA_IN_IMAGE}",
        f'LABEL {CUDA_LABEL}="{",".join(installed)}"',
    ]
