"""Which image a (code env, execution config) pair runs in, decided at execute time.

The ledger's *current* image of the pair wins (read once when the task starts, so a rebuild that switches
the pointer mid-run never changes a running task's image). On Docker, a code env without packages,
resources or R packages that was never built runs on its execution config's base image as is, when the
daemon shares the worker's filesystem (the runtime is mounted). Otherwise (and always on Kubernetes and
remote daemons, which need the runtime baked into code-env images) the task fails with the command
that builds the image (DSS's ERR_CODEENV_CONTAINER_IMAGE_TAG_NOT_FOUND).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dss_airflow.config.models import DockerExecutionConfig, KubernetesExecutionConfig
from dss_airflow.errors import ImageNotBuiltError
from dss_airflow.images.ledger import Ledger
from dss_airflow.spec import ImageRef

if TYPE_CHECKING:
    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.resolve import ResolvedExecution


def image_for(catalog: Catalog, resolved: ResolvedExecution, ledger: Ledger | None = None) -> ImageRef:
    """The current image of the resolved (code env, execution config) pair — or (code env, spark config)
    for Spark on Kubernetes, whose images are built for the spark config."""
    spark = resolved.spark_config if resolved.spark_config and resolved.spark_config.is_cluster else None
    config_name = resolved.spark_config_name if spark else resolved.execution_config_name
    config = resolved.execution_config
    if spark is None and not isinstance(config, DockerExecutionConfig | KubernetesExecutionConfig):
        raise TypeError(f"execution config {config_name!r} does not run containers")
    assert config_name is not None
    state = (ledger or Ledger.default()).pair(resolved.code_env_name, config_name)
    if state.current is not None:
        return ImageRef(image=state.current.image, python=state.current.python)
    env = resolved.code_env
    # requirements() includes what the env adds implicitly (the notebook packages of `notebook: true`).
    packages = catalog.requirements(resolved.code_env_name)
    needs_own_image = packages or env.r_packages or env.resources.mode != "none"
    # Pods, and daemons that cannot mount the worker's copy, need the dss_airflow runtime, which only
    # code-env images carry (a bare base image does not).
    if needs_own_image or not isinstance(config, DockerExecutionConfig) or not config.shares_filesystem:
        kind = "spark config" if spark else "execution config"
        detail = f" (last build failed: {state.last_error})" if state.last_error else ""
        raise ImageNotBuiltError(
            f"no image is built for code env {resolved.code_env_name!r} on {kind} {config_name!r}{detail}: "
            f"build it with `dss-airflow images build {resolved.code_env_name} --config {config_name}`"
        )
    return ImageRef(image=catalog.base_images[config.base_image].image)
