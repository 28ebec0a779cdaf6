"""The cncf-kubernetes provider's KubernetesHook, isolated per caller.

Given no ``client_configuration``, the provider's hook calls ``config.load_kube_config(
client_configuration=None, context=...)``, which *replaces the kubernetes client's process-wide default
configuration*; every ApiClient created afterwards copies that default. Two tasks on configs with different
clusters in one process (a CeleryExecutor worker with threads, the triggerer) could then talk to the wrong
cluster. This hook gives each instance its own fresh ``kubernetes.client.Configuration`` (the hook passes
it to every ``load_*_config`` call and to the ApiClient), so nothing global is read or written, except for
``in_cluster`` where the provider's sync hook loads the in-cluster config into the global default
(identical for every caller in a pod) and we load it into our own configuration as well.

:class:`PodMemorySampler` reads a running pod's memory from the metrics API through such a hook.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


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


class PodMemorySampler:
    """Polls the metrics API (``metrics.k8s.io/v1beta1``, served by metrics-server) for one container of a
    running pod and keeps the largest working set seen: a pod killed for memory writes no result, and
    this is then the only figure of what it used. Every call goes through ``fetch`` (the provider's hook);
    the first after one interval, when the provider has made its client (metrics-server scrapes every 15 s
    or so: a shorter pod has no sample). A 404 (no sample yet, or no metrics API) is retried at the next
    interval; any other error (403: no RBAC to read metrics) ends the sampling: ``peak`` stays None."""

    def __init__(self, fetch: Callable[[], object], container: str, interval: float = 15.0) -> None:
        self.peak: int | None = None
        self._fetch = fetch
        self._container = container
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="dss-pod-metrics", daemon=True)

    def start(self) -> PodMemorySampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        from kubernetes.client.exceptions import ApiException

        from dss_airflow.usage import pod_metrics_memory

        while not self._stop.wait(self._interval):
            try:
                memory = pod_metrics_memory(self._fetch(), self._container)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                return
            except Exception:  # noqa: BLE001 - a figure for a message: never worth failing the run
                return
            if memory is not None and (self.peak is None or memory > self.peak):
                self.peak = memory


def pod_metrics_fetch(operator: Any, name: str, namespace: str) -> Callable[[], object]:
    """One read of a pod's PodMetrics through the provider operator's hook (looked up at each call: the
    operator makes it when it starts)."""
    return lambda: operator.hook.get_custom_object(
        group="metrics.k8s.io", version="v1beta1", plural="pods", name=name, namespace=namespace
    )
