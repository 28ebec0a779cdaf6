"""Which image a (code env, execution config) pair runs in, decided at execute time.

A code env without packages runs on its execution config's base image as is. An env with packages needs
a code-env image built from its package list (``dss-airflow images build ENV``); until one exists the
task fails with a message that names the build command (DSS's ERR_CODEENV_CONTAINER_IMAGE_TAG_NOT_FOUND).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dss_airflow.config.models import DockerExecutionConfig, KubernetesExecutionConfig
from dss_airflow.errors import ImageNotBuiltError
from dss_airflow.spec import ImageRef

if TYPE_CHECKING:
    from dss_airflow.config.loader import Catalog
    from dss_airflow.config.resolve import ResolvedExecution


def image_for(catalog: Catalog, resolved: ResolvedExecution) -> ImageRef:
    config = resolved.execution_config
    if not isinstance(config, DockerExecutionConfig | KubernetesExecutionConfig):
        raise TypeError(f"execution config {resolved.execution_config_name!r} does not run containers")
    env = resolved.code_env
    if env.packages or env.requirements_file or env.r_packages:
        raise ImageNotBuiltError(
            f"no image is built for code env {resolved.code_env_name!r} on execution config "
            f"{resolved.execution_config_name!r}: build it with "
            f"`dss-airflow images build {resolved.code_env_name} --config {resolved.execution_config_name}`"
        )
    return ImageRef(image=catalog.base_images[config.base_image].image)
