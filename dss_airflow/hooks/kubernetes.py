"""The cncf-kubernetes provider's KubernetesHook, isolated per caller.

Given no ``client_configuration``, the provider's hook calls ``config.load_kube_config(
client_configuration=None, context=...)``, which *replaces the kubernetes client's process-wide default
configuration*; every ApiClient created afterwards copies that default. Two tasks on configs with different
clusters in one process (a CeleryExecutor worker with threads, the triggerer) could then talk to the wrong
cluster. This hook gives each instance its own fresh ``kubernetes.client.Configuration`` (the hook passes
it to every ``load_*_config`` call and to the ApiClient), so nothing global is read or written, except for
``in_cluster`` where the provider's sync hook loads the in-cluster config into the global default
(identical for every caller in a pod) and we load it into our own configuration as well.
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def isolated_hook_class() -> type[Any]:
    """``KubernetesHook`` subclass that never reads or writes the client's process-wide configuration."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from kubernetes import client, config

    class IsolatedKubernetesHook(KubernetesHook):
        """A hook that never reads or writes the kubernetes client's process-wide default configuration."""

        def get_conn(self) -> Any:
            if self.client_configuration is None:
                self.client_configuration = client.Configuration()
                in_cluster = self.in_cluster
                if in_cluster is None:
                    in_cluster = self._get_field("in_cluster")  # type: ignore[no-untyped-call]
                if in_cluster:
                    config.load_incluster_config(client_configuration=self.client_configuration)
            return super().get_conn()

    return IsolatedKubernetesHook


def make_hook(conn_id: str | None, context: str | None) -> Any:
    """The provider's KubernetesHook for a connection and kubeconfig context, with its own client config.

    ``conn_id`` None: in-cluster, else the default kubeconfig (``KUBECONFIG``).
    """
    return isolated_hook_class()(conn_id=conn_id, cluster_context=context)
