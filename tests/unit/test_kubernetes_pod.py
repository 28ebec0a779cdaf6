"""Pure pod builder: recipe run → ContainerSpec → V1Pod; every manifest validated against k8s schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s
from kubernetes.utils import parse_quantity

from dss_airflow.backends.kubernetes import (
    MAX_CONTEXT_BYTES,
    KubernetesBackend,
    build_pod,
    make_operator,
    operator_kwargs,
    plan_pod_io,
    pod_spec,
)
from dss_airflow.config.loader import load_catalog
from dss_airflow.config.models import KubernetesExecutionConfig
from dss_airflow.config.resolve import resolve_execution
from dss_airflow.errors import ConfigError, DSSAirflowError, ExecutionError
from dss_airflow.k8s_names import label_value
from dss_airflow.spec import RUN_DIR, Entrypoint, ImageRef, TaskRun, build_spec
from tests.helpers import fake_context, make_project, write_config

K8S_VERSIONS = ("1.36.0", "1.37.0")
DIGEST = "sha256:" + "ab" * 32
IMAGE = ImageRef(f"registry.example.com:5000/dss-code-envs@{DIGEST}", python="/opt/dss/env/bin/python")

K8S_CONFIG = """
    defaults:
      project: demo
      code_env: pandas
    base_images:
      base:
        image: dss-airflow-base:bookworm-py311
    execution_configs:
      k8s-big:
        type: kubernetes
        base_image: base
        kubernetes_conn_id: cluster_a
        context: ctx-a
        namespace: dss-jobs
        registry: {url: "registry.example.com:5000", connection_id: registry}
        image_pull_secrets: [regcred]
        service_account: dss-runner
        run_as_user: 2001
        node_selector: {disktype: ssd, "kubernetes.io/arch": amd64}
        tolerations:
          - {key: dedicated, operator: Equal, value: dss, effect: NoSchedule}
          - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 30}
        resources:
          requests: {cpu: 500m, memory: 1Gi, nvidia.com/gpu: "1"}
          limits: {cpu: "2", memory: 4Gi, nvidia.com/gpu: "1", ephemeral-storage: 10Gi}
        env: {MODE: batch}
      k8s-other:
        type: kubernetes
        base_image: base
        kubernetes_conn_id: cluster_b
        context: ctx-b
      k8s-plain:
        type: kubernetes
        base_image: base
    code_envs:
      pandas: {packages: [pandas==2.2.3]}
      bare: {}
    managed_folders:
      raw: {pvc: data-pvc, sub_path: folders/raw}
      ref: {pvc: ref-pvc}
      curated: {pvc: data-pvc, sub_path: folders/curated}
      hostonly: {path: hostonly}
    projects:
      demo:
        root: project
        pvc: projects-pvc
        sub_path: demo
      nopvc:
        root: project
"""


@pytest.fixture
def catalog(tmp_path):
    write_config(tmp_path, {"c.yaml": K8S_CONFIG})
    make_project(tmp_path, {"recipes/r.py": "pass\n"})
    return load_catalog(tmp_path)


def make_run(catalog, config="k8s-big", *, project="demo", inputs=None, outputs=None, params=None):
    resolved = resolve_execution(catalog, project=project, execution_config=config, code_env="pandas")
    pod_inputs, pod_outputs = plan_pod_io(
        catalog,
        inputs if inputs is not None else {"orders": "raw/2026/orders.csv", "lookup": "ref", "more": "raw"},
        outputs if outputs is not None else {"clean": "curated/orders", "summary": "curated"},
        run_key="t-1-abcd",
    )
    return TaskRun(
        resolved=resolved,
        entrypoint=Entrypoint(PurePosixPath("recipes/r.py")),
        inputs=pod_inputs,
        outputs=pod_outputs,
        params=params if params is not None else {"limit": 3},
        run_dir=Path(RUN_DIR),
        task_labels={
            "dss_airflow.dag_id": "Orders_Daily",
            "dss_airflow.task_id": "group.clean",
            "dss_airflow.run_id": "scheduled__2026-05-01T00:00:00+00:00",
            "dss_airflow.map_index": "-1",
            "dss_airflow.try_number": "1",
        },
        unique="u1",
    )


def make_spec(catalog, run):
    return pod_spec(catalog, run, build_spec(run, layout="pod", image=IMAGE))


def make_pod(catalog, run):
    return build_pod(make_spec(catalog, run), run.resolved.execution_config)


def manifest(pod: Any) -> dict[str, Any]:
    return ApiClient().sanitize_for_serialization(pod)


def assert_valid(data: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(data, version, strict=True)


def submitted(pod, config) -> dict[str, Any]:
    """What the provider's operator would submit for our pod (sidecar added), without a cluster."""
    return manifest(make_operator("clean", pod, config).build_pod_request_obj(dry_run=True))


# --------------------------------------------------------------------------------------- the manifest
def test_pod_manifest_is_valid_and_complete(catalog):
    run = make_run(catalog)
    pod = make_pod(catalog, run)
    data = manifest(pod)
    assert_valid(data)
    config = run.resolved.execution_config
    assert isinstance(config, KubernetesExecutionConfig)

    meta, spec = data["metadata"], data["spec"]
    assert meta["namespace"] == "dss-jobs"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", meta["name"])
    assert spec["restartPolicy"] == "Never"
    assert spec["serviceAccountName"] == "dss-runner"
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"disktype": "ssd", "kubernetes.io/arch": "amd64"}
    assert spec["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "dss", "effect": "NoSchedule"},
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 30,
        },
    ]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 2001,
        "runAsGroup": 2001,
        "fsGroup": 2001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }

    (container,) = spec["containers"]
    assert container["image"] == IMAGE.image
    assert container["command"] == ["/opt/dss/env/bin/python", "/opt/dss-airflow/runtime/runner.py", "-"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for kind, expected in (("requests", config.resources.requests), ("limits", config.resources.limits)):
        got = container["resources"][kind]
        assert set(got) == set(expected)
        for key, quantity in expected.items():
            assert parse_quantity(got[key]) == parse_quantity(quantity), (kind, key)
    assert parse_quantity(container["resources"]["limits"]["memory"]) == 4 * 2**30


def test_labels_are_valid_kubernetes_labels(catalog):
    labels = manifest(make_pod(catalog, make_run(catalog)))["metadata"]["labels"]
    key_re = re.compile(
        r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
    )
    value_re = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
    for key, value in labels.items():
        assert key_re.match(key) and len(key.split("/")[-1]) <= 63, key
        assert value_re.match(value) and len(value) <= 63, (key, value)
    assert labels["dss-airflow/dag-id"] == "Orders_Daily"
    assert labels["dss-airflow/task-id"] == "group.clean"
    assert labels["dss-airflow/execution-config"] == "k8s-big"
    assert labels["dss-airflow/code-env"] == "pandas"
    assert labels["dss-airflow/try-number"] == "1"
    assert labels["dss-airflow/run-id"].startswith("scheduled__2026-05-01T00-00-00-00-00-"), "lossy: hashed"


def test_label_value_truncates_with_a_hash():
    long = "x" * 100
    assert len(label_value(long)) <= 63 and label_value(long) != label_value(long + "y")
    assert label_value("-_weird value!") == label_value("-_weird value!")
    assert re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?", label_value("-_weird value!"))
    assert label_value("ok.value_1") == "ok.value_1"
    assert label_value("") == ""
    assert re.fullmatch(r"[0-9a-f]{8}", label_value("!!!"))


def test_volumes_mounts_and_sub_paths(catalog):
    spec = manifest(make_pod(catalog, make_run(catalog)))["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    claims = {
        v["persistentVolumeClaim"]["claimName"]: v for v in volumes.values() if "persistentVolumeClaim" in v
    }
    assert set(claims) == {"projects-pvc", "data-pvc", "ref-pvc"}, "one volume per distinct claim"
    assert claims["projects-pvc"]["persistentVolumeClaim"]["readOnly"] is True
    assert claims["ref-pvc"]["persistentVolumeClaim"]["readOnly"] is True
    assert claims["data-pvc"]["persistentVolumeClaim"]["readOnly"] is False, "also holds an output"
    assert volumes["dss-run"] == {"name": "dss-run", "emptyDir": {}}
    name_of = {claim: v["name"] for claim, v in claims.items()}
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/dss/project"] == {
        "name": name_of["projects-pvc"],
        "mountPath": "/dss/project",
        "subPath": "demo",
        "readOnly": True,
    }
    assert mounts["/dss/in/raw"] == {
        "name": name_of["data-pvc"],
        "mountPath": "/dss/in/raw",
        "subPath": "folders/raw",
        "readOnly": True,
    }
    assert mounts["/dss/in/ref"] == {"name": name_of["ref-pvc"], "mountPath": "/dss/in/ref", "readOnly": True}
    assert mounts["/dss/out-root/curated"] == {
        "name": name_of["data-pvc"],
        "mountPath": "/dss/out-root/curated",
        "subPath": "folders/curated",
        "readOnly": False,
    }
    assert mounts["/dss/run"] == {"name": "dss-run", "mountPath": "/dss/run"}
    assert len(mounts) == 5, "a folder read by two inputs is mounted once"


def test_env_carries_the_context_with_in_pod_paths_and_promote_pairs(catalog):
    container = manifest(make_pod(catalog, make_run(catalog)))["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MODE"] == "batch" and env["HOME"] == "/tmp" and env["DSS_EXECUTION_CONFIG"] == "k8s-big"
    context = json.loads(env["DSS_CONTEXT_JSON"])
    staging = "/dss/out-root/curated/.dss-staging/t-1-abcd"
    assert context == {
        "recipe": "/dss/project/recipes/r.py",
        "recipe_name": "recipes/r.py",
        "language": "python",
        "inputs": {
            "orders": "/dss/in/raw/2026/orders.csv",
            "lookup": "/dss/in/ref",
            "more": "/dss/in/raw",
        },
        "outputs": {"clean": f"{staging}/clean", "summary": f"{staging}/summary"},
        "params": {"limit": 3},
        "python_path": ["/dss/project/lib"],
        "workdir": "/dss/run/cwd",
        "result_file": "/airflow/xcom/return.json",
        "meter": "cgroup",  # the pod's own cgroup; no snapshot file: the worker cannot read the pod's
        "promote": [
            [f"{staging}/clean", "/dss/out-root/curated/orders"],
            [f"{staging}/summary", "/dss/out-root/curated"],
        ],
    }


@pytest.mark.parametrize("config", ["k8s-big", "k8s-plain"])
def test_what_the_provider_submits_is_valid(catalog, config, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CLUSTER_A", '{"conn_type": "kubernetes"}')
    run = make_run(catalog, config)
    pod = make_pod(catalog, run)
    data = submitted(pod, run.resolved.execution_config)
    assert_valid(data)
    names = [c["name"] for c in data["spec"]["containers"]]
    assert names == ["base", "airflow-xcom-sidecar"]
    base, sidecar = data["spec"]["containers"]
    assert base["command"][-1] == "-" and base["image"] == IMAGE.image
    assert {"name": "xcom", "mountPath": "/airflow/xcom"} in base["volumeMounts"]
    assert sidecar["securityContext"]["allowPrivilegeEscalation"] is False, "restricted PSS for the sidecar"
    assert data["spec"]["securityContext"]["runAsNonRoot"] is True
    assert data["metadata"]["name"] == pod.metadata.name, "no random suffix on our unique name"
    assert data["metadata"]["labels"]["dss-airflow/dag-id"] == "Orders_Daily"


def test_each_operator_gets_its_own_cluster_and_client_configuration(catalog):
    """Two configs, two clusters: kwargs and hooks stay separate, no shared (global) client config."""
    run_a, run_b = make_run(catalog, "k8s-big"), make_run(catalog, "k8s-other")
    op_a = make_operator("a", make_pod(catalog, run_a), run_a.resolved.execution_config)
    op_b = make_operator("b", make_pod(catalog, run_b), run_b.resolved.execution_config)
    assert (op_a.kubernetes_conn_id, op_a.cluster_context, op_a.namespace) == (
        "cluster_a",
        "ctx-a",
        "dss-jobs",
    )
    assert (op_b.kubernetes_conn_id, op_b.cluster_context, op_b.namespace) == (
        "cluster_b",
        "ctx-b",
        "default",
    )
    assert op_a.hook.cluster_context == "ctx-a" and op_b.hook.cluster_context == "ctx-b"
    assert op_a.hook.conn_id == "cluster_a" and op_b.hook.conn_id == "cluster_b"
    assert op_a.do_xcom_push and op_a.get_logs and op_a.on_finish_action.value == "delete_pod"


def test_hook_loads_kubeconfig_into_its_own_configuration(catalog, tmp_path, monkeypatch):
    """Same kubeconfig, two contexts: each operator's client talks to its own cluster."""
    from kubernetes import client

    kubeconfig = tmp_path / "kubeconfig"
    clusters = [{"name": n, "cluster": {"server": f"https://{n}.example:6443"}} for n in ("a", "b")]
    contexts = [{"name": f"ctx-{n}", "context": {"cluster": n, "user": "u"}} for n in ("a", "b")]
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": clusters,
                "contexts": contexts,
                "users": [{"name": "u", "user": {"token": "t"}}],
                "current-context": "ctx-a",
            }
        )
    )
    for conn_id in ("CLUSTER_A", "CLUSTER_B"):
        extra = {"kube_config_path": str(kubeconfig)}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", json.dumps({"conn_type": "kubernetes", "extra": extra}))
    before = client.Configuration.get_default_copy().host
    hosts = []
    for name in ("k8s-big", "k8s-other"):
        run = make_run(catalog, name)
        operator = make_operator("t", make_pod(catalog, run), run.resolved.execution_config)
        hosts.append(operator.hook.api_client.configuration.host)
    assert hosts == ["https://a.example:6443", "https://b.example:6443"]
    assert client.Configuration.get_default_copy().host == before, "the process-wide default is untouched"


# ------------------------------------------------------------------------------------------ bad inputs
def test_folder_without_pvc_is_a_clear_error(catalog):
    run = make_run(catalog, outputs={"x": "hostonly"})
    with pytest.raises(ConfigError) as info:
        make_pod(catalog, run)
    message = str(info.value)
    assert "managed_folders.hostonly.pvc" in message and "no pvc" in message and "Add 'pvc'" in message


def test_project_without_pvc_is_a_clear_error(catalog):
    run = make_run(catalog, project="nopvc")
    with pytest.raises(ConfigError, match=r"projects\.nopvc\.pvc.*Add 'pvc'"):
        make_pod(catalog, run)


def test_oversized_context_is_refused_before_anything_runs(catalog):
    run = make_run(catalog, params={"blob": "x" * MAX_CONTEXT_BYTES})
    with pytest.raises(ConfigError, match=r"recipe_params.*64 KiB.*too big"):
        make_pod(catalog, run)


def test_pods_need_a_built_code_env_image_even_without_packages(catalog):
    from dss_airflow.images.lookup import image_for

    resolved = resolve_execution(catalog, project="demo", execution_config="k8s-big", code_env="bare")
    with pytest.raises(DSSAirflowError, match=r"dss-airflow images build bare --config k8s-big"):
        image_for(catalog, resolved)


def test_pod_layout_leaves_docker_and_host_contexts_alone(catalog):
    from dss_airflow.spec import build_context

    run = make_run(catalog)
    assert "promote" not in build_context(run, "container")
    assert "promote" not in build_context(run, "host")


# ------------------------------------------------------------------------------------ backend & operator
class FakeKPO:
    def __init__(self, result=None, error=None, kill_during=False, remote_pod=None):
        self.runner_result = result
        self.error = error
        self.kill_during = kill_during
        self.remote_pod = remote_pod  # the provider's last read of the pod, once it completed
        self.killed = False
        self.backend: KubernetesBackend | None = None

    def execute(self, context, **kwargs):
        if self.kill_during:
            assert self.backend is not None
            self.backend.kill()
            return None  # apache/airflow#73006: execute returns normally after on_kill
        if self.error:
            raise self.error
        return self.runner_result

    def on_kill(self):
        self.killed = True

    def build_pod_request_obj(self, context=None, dry_run=False):
        """What the task's rendered description shows (tested with the real provider elsewhere)."""
        return k8s.V1Pod(api_version="v1", kind="Pod")


def run_backend(monkeypatch, catalog, fake):
    import dss_airflow.backends.kubernetes as backend_module

    run = make_run(catalog)
    backend = KubernetesBackend(catalog, run.resolved)
    fake.backend = backend
    monkeypatch.setattr(backend_module, "make_operator", lambda *a, **k: fake)
    return backend.run(make_spec(catalog, run), fake_context(task_id="clean"))


def test_backend_returns_the_runner_result(monkeypatch, catalog):
    result = {"status": "success", "outputs": {}}
    outcome = run_backend(monkeypatch, catalog, FakeKPO(result=result))
    assert outcome.result == result and outcome.succeeded


def test_backend_reports_a_recipe_failure_through_its_result(monkeypatch, catalog):
    result = {"status": "failed", "error": "ValueError: boom"}
    fake = FakeKPO(result=result, error=RuntimeError("Pod returned a failure"))
    outcome = run_backend(monkeypatch, catalog, fake)
    assert outcome.result == result and outcome.failure is None and not outcome.succeeded


def test_backend_reports_an_infrastructure_failure(monkeypatch, catalog):
    outcome = run_backend(monkeypatch, catalog, FakeKPO(error=RuntimeError("ImagePullBackOff")))
    assert isinstance(outcome.failure, ExecutionError) and not outcome.succeeded
    assert re.search("failed: ImagePullBackOff", str(outcome.failure))


def test_a_pod_killed_for_memory_says_so_with_the_limit_and_a_larger_config(monkeypatch, catalog):
    terminated = k8s.V1ContainerStateTerminated(exit_code=137, reason="OOMKilled")
    status = k8s.V1ContainerStatus(
        name="base", image="i", image_id="", ready=False, restart_count=0,
        state=k8s.V1ContainerState(terminated=terminated),
    )  # fmt: skip
    pod = k8s.V1Pod(status=k8s.V1PodStatus(phase="Failed", container_statuses=[status]))
    fake = FakeKPO(error=RuntimeError("Pod returned a failure"), remote_pod=pod)
    outcome = run_backend(monkeypatch, catalog, fake)
    assert outcome.failure is not None and outcome.failure.out_of_memory
    assert outcome.failure.cause == (
        "the recipe ran out of memory (limit 4Gi of execution config 'k8s-big'): raise "
        "resources.limits.memory or use execution config 'k8s-other'"
    ), "k8s-other sets no limits: larger than any (no metrics API sample without a cluster)"
    assert outcome.usage is None


def test_killed_run_never_succeeds_even_when_the_wait_returned(monkeypatch, catalog):
    fake = FakeKPO(result={"status": "success"}, kill_during=True)
    outcome = run_backend(monkeypatch, catalog, fake)
    assert not outcome.succeeded and re.search("on_kill", str(outcome.failure))
    assert fake.killed


def test_operator_runs_a_kubernetes_recipe_and_returns_the_xcom_result(monkeypatch, catalog, tmp_path):
    import dss_airflow.backends.kubernetes as backend_module
    import dss_airflow.images.lookup as lookup
    from dss_airflow import DSSContainerRecipeOperator

    seen: dict[str, Any] = {}
    result = {"status": "success", "outputs": {"clean": ["a.csv", "sub/b.csv"]}, "result": {"rows": 2}}

    def fake_make_operator(task_id, pod, config, **extra):
        seen["pod"] = pod
        return FakeKPO(result=result)

    monkeypatch.setattr(lookup, "image_for", lambda catalog, resolved, ledger=None: IMAGE)
    monkeypatch.setattr(backend_module, "make_operator", fake_make_operator)
    operator = DSSContainerRecipeOperator(
        task_id="clean",
        recipe="recipes/r.py",
        execution_config="k8s-big",
        inputs=["raw"],
        outputs={"clean": "curated/orders"},
        config_dir=str(tmp_path),
    )
    returned = operator.execute(fake_context(task_id="clean"))
    assert returned["status"] == "success"
    assert returned["image"] == IMAGE.image
    assert returned["result"] == {"rows": 2}
    assert returned["outputs"] == {
        "clean": ["/dss/out-root/curated/orders/a.csv", "/dss/out-root/curated/orders/sub/b.csv"]
    }
    assert_valid(manifest(seen["pod"]))


def test_operator_reports_the_recipe_error_from_the_pod(monkeypatch, catalog, tmp_path):
    import dss_airflow.backends.kubernetes as backend_module
    import dss_airflow.images.lookup as lookup
    from dss_airflow import DSSContainerRecipeOperator

    result = {"status": "failed", "error": "KeyError: 'x'"}
    monkeypatch.setattr(lookup, "image_for", lambda catalog, resolved, ledger=None: IMAGE)
    monkeypatch.setattr(
        backend_module, "make_operator", lambda *a, **k: FakeKPO(result=result, error=RuntimeError("x"))
    )
    operator = DSSContainerRecipeOperator(
        task_id="clean", recipe="recipes/r.py", execution_config="k8s-big", config_dir=str(tmp_path)
    )
    with pytest.raises(ExecutionError, match=r"KeyError: 'x'.*left untouched"):
        operator.execute(fake_context(task_id="clean"))


def test_render_task_gives_the_submitted_yaml(monkeypatch, catalog, tmp_path):
    import textwrap

    import yaml

    import dss_airflow.images.lookup as lookup
    from dss_airflow.k8s_render import render_task

    monkeypatch.setenv("AIRFLOW_CONN_CLUSTER_A", '{"conn_type": "kubernetes"}')
    monkeypatch.setattr(lookup, "image_for", lambda catalog, resolved, ledger=None: IMAGE)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "k8s_dag.py").write_text(
        textwrap.dedent(f"""
        from airflow.sdk import DAG, Param
        from dss_airflow import DSSContainerRecipeOperator

        with DAG("k8s_dag", schedule=None, params={{"cfg": Param("k8s-big", type="string")}}):
            DSSContainerRecipeOperator(
                task_id="clean",
                recipe="recipes/r.py",
                execution_config="{{{{ params.cfg }}}}",
                inputs=["raw"],
                outputs=["curated"],
                config_dir={str(tmp_path)!r},
            )
        """)
    )
    data = yaml.safe_load(render_task("k8s_dag", "clean", dags_folder=dags))
    assert_valid(data)
    assert data["metadata"]["namespace"] == "dss-jobs", "the param default chose k8s-big"
    assert [c["name"] for c in data["spec"]["containers"]] == ["base", "airflow-xcom-sidecar"]
    plain = yaml.safe_load(render_task("k8s_dag", "clean", dags_folder=dags, execution_config="k8s-plain"))
    assert plain["metadata"]["namespace"] == "default"
    with pytest.raises(DSSAirflowError, match="no task"):
        render_task("k8s_dag", "nope", dags_folder=dags)


# ------------------------------------------------------------------------------------ deferrable mode
class DeferringKPO(FakeKPO):
    """The provider's deferrable path: execute() defers to trigger_reentry; re-entry returns the XCom."""

    def __init__(self, result):
        super().__init__(result=result)
        self.events: list[dict[str, Any]] = []

    def execute(self, context, **kwargs):
        from airflow.sdk.exceptions import TaskDeferred

        raise TaskDeferred(trigger="the-provider-trigger", method_name="trigger_reentry", timeout=None)

    def trigger_reentry(self, context, event):
        self.events.append(event)
        return self.runner_result


def test_deferrable_run_defers_to_our_resume_method_and_finishes_like_a_waiting_run(
    monkeypatch, catalog, tmp_path
):
    import json as json_module

    from airflow.sdk.exceptions import TaskDeferred

    import dss_airflow.backends.kubernetes as backend_module
    import dss_airflow.images.lookup as lookup
    from dss_airflow import DSSContainerRecipeOperator

    result = {"status": "success", "outputs": {"clean": ["a.csv"]}, "result": {"rows": 1}}
    fake = DeferringKPO(result)
    pods: list[Any] = []
    deferrable_flags: list[bool] = []

    def fake_make_operator(task_id, pod, config, **extra):
        if "deferrable" in extra:  # the run's operator (the rendered description builds one too)
            pods.append(pod)
            deferrable_flags.append(extra["deferrable"])
        return fake

    monkeypatch.setattr(lookup, "image_for", lambda catalog, resolved, ledger=None: IMAGE)
    monkeypatch.setattr(backend_module, "make_operator", fake_make_operator)
    operator = DSSContainerRecipeOperator(
        task_id="clean",
        recipe="recipes/r.py",
        execution_config="k8s-big",
        outputs={"clean": "curated/orders"},
        config_dir=str(tmp_path),
        deferrable=True,
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(fake_context(task_id="clean"))
    assert deferred.value.trigger == "the-provider-trigger", "the provider's own trigger waits for the pod"
    assert deferred.value.method_name == "resume_from_pod"
    kwargs = deferred.value.kwargs
    assert kwargs is not None
    assert json_module.loads(json_module.dumps(kwargs)) == kwargs, "next_kwargs are stored as JSON"
    assert kwargs["image"] == IMAGE.image and kwargs["python"] == IMAGE.python

    # A later rebuild must not change the pod being resumed: the image travels in the kwargs.
    monkeypatch.setattr(lookup, "image_for", lambda *a, **k: pytest.fail("resume must not look up again"))
    fresh = DSSContainerRecipeOperator(  # the worker that resumes has a new operator instance
        task_id="clean",
        recipe="recipes/r.py",
        execution_config="k8s-big",
        outputs={"clean": "curated/orders"},
        config_dir=str(tmp_path),
        deferrable=True,
    )
    event = {"status": "success", "name": pods[0].metadata.name, "namespace": "dss-jobs"}
    returned = fresh.resume_execution(
        "resume_from_pod", {**kwargs, "event": event}, fake_context(task_id="clean")
    )
    assert fake.events == [event]
    assert returned["result"] == {"rows": 1}
    assert returned["outputs"] == {"clean": ["/dss/out-root/curated/orders/a.csv"]}
    assert manifest(pods[1]) == manifest(pods[0]), "the resumed run plans exactly the same pod"
    assert deferrable_flags == [True, True]


def test_the_real_provider_operator_defers_with_our_pod_and_cluster(catalog):
    """Without a cluster: the composed KubernetesPodOperator builds the provider's trigger for our pod."""
    from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger
    from airflow.sdk.exceptions import TaskDeferred

    run = make_run(catalog)
    pod = make_pod(catalog, run)
    operator = make_operator("clean", pod, run.resolved.execution_config, deferrable=True)
    assert operator.deferrable is True
    operator.pod = pod
    with pytest.raises(TaskDeferred) as deferred:
        operator.invoke_defer_method()
    trigger = deferred.value.trigger
    assert isinstance(trigger, KubernetesPodTrigger)
    assert deferred.value.method_name == "trigger_reentry"
    classpath, kwargs = trigger.serialize()
    assert kwargs["pod_name"] == pod.metadata.name and kwargs["pod_namespace"] == "dss-jobs"
    assert kwargs["cluster_context"] == "ctx-a" and kwargs["kubernetes_conn_id"] == "cluster_a"
    assert kwargs["on_finish_action"] == "delete_pod", "the triggerer path deletes the pod too"


def test_the_composed_operator_carries_the_tasks_execution_timeout_into_its_deferral(catalog):
    """apache/airflow#67227: the provider turns execution_timeout into the trigger's deadline, so the
    operator we compose must carry the DSS task's own (it was built without it)."""
    import datetime
    from types import SimpleNamespace

    from airflow.sdk.exceptions import TaskDeferred

    run = make_run(catalog)
    pod = make_pod(catalog, run)
    timeout = datetime.timedelta(minutes=10)
    operator = make_operator(
        "clean", pod, run.resolved.execution_config, deferrable=True, execution_timeout=timeout
    )
    assert operator.execution_timeout == timeout
    operator.pod = pod
    started = datetime.datetime.now(datetime.UTC)
    with pytest.raises(TaskDeferred) as deferred:
        operator.invoke_defer_method(context={"ti": SimpleNamespace(start_date=started)})
    _, kwargs = deferred.value.trigger.serialize()
    assert kwargs["trigger_kwargs"]["_execution_deadline"] == int(started.timestamp() + 600)
    assert deferred.value.timeout is not None and deferred.value.timeout >= timeout


def test_pod_settings_of_the_config_reach_the_provider(tmp_path):
    write_config(
        tmp_path,
        {
            "c.yaml": K8S_CONFIG.replace(
                "      k8s-plain:\n        type: kubernetes\n        base_image: base\n",
                "      k8s-plain:\n        type: kubernetes\n        base_image: base\n"
                "        startup_timeout: 600\n        logging_interval: 30\n"
                "        on_finish_action: keep_pod\n",
            )
        },
    )
    make_project(tmp_path, {"recipes/r.py": "pass\n"})
    catalog = load_catalog(tmp_path)
    config = catalog.execution_configs["k8s-plain"]
    big = catalog.execution_configs["k8s-big"]
    assert isinstance(config, KubernetesExecutionConfig) and isinstance(big, KubernetesExecutionConfig)
    run = make_run(catalog, "k8s-plain")
    kwargs = operator_kwargs(make_pod(catalog, run), config)
    assert (kwargs["startup_timeout_seconds"], kwargs["logging_interval"]) == (600, 30)
    assert kwargs["on_finish_action"] == "keep_pod", "a pod kept for debugging"
    default = operator_kwargs(make_pod(catalog, run), big)
    assert default["on_finish_action"] == "delete_pod" and default["execution_timeout"] is None


def test_a_resumed_pod_that_was_already_collected_succeeds_with_a_warning(monkeypatch, catalog, tmp_path):
    """apache/airflow#66715: after a success event the pod may be gone (GC); the provider then returns no
    XCom. The runner promoted the outputs in the PVC before exiting 0: the task succeeds and says so."""
    import dss_airflow.backends.kubernetes as backend_module
    import dss_airflow.images.lookup as lookup
    from dss_airflow import DSSContainerRecipeOperator

    fake = DeferringKPO(None)
    monkeypatch.setattr(lookup, "image_for", lambda catalog, resolved, ledger=None: IMAGE)
    monkeypatch.setattr(backend_module, "make_operator", lambda *a, **k: fake)
    operator = DSSContainerRecipeOperator(
        task_id="clean",
        recipe="recipes/r.py",
        execution_config="k8s-big",
        outputs={"clean": "curated/orders"},
        config_dir=str(tmp_path),
        deferrable=True,
    )
    kwargs = {"run_key": "k", "unique": "u", "image": IMAGE.image, "python": IMAGE.python}
    event = {"status": "success", "name": "gone", "namespace": "dss-jobs"}
    returned = operator.resume_execution("resume_from_pod", {**kwargs, "event": event}, fake_context())
    assert returned["outputs"] == {"clean": []} and returned["result"] is None
    assert any("deleted before its result was read" in w for w in returned["warnings"])
