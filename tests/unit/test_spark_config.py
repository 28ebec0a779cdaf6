"""spark_configs: config errors, and the SparkApplication / spark-submit built from a kubernetes config."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from dss_airflow.config.loader import load_catalog
from dss_airflow.config.resolve import check_permission
from dss_airflow.config.spark import KubernetesSparkConfig
from dss_airflow.errors import ConfigError, ImageNotBuiltError, InvalidConfigError, PermissionDeniedError
from dss_airflow.spark import (
    SparkJob,
    build_pod_template,
    build_spark_application,
    build_spark_submit_command,
    spark_memory,
)
from dss_airflow.spec import ImageRef
from tests.helpers import BASE_CONFIG, fake_context, make_project, write_config

SCHEMAS = Path(__file__).resolve().parents[3] / "shared" / "schemas"
CRD = SCHEMAS / "sparkoperator.k8s.io_sparkapplications.yaml"

SPARK = """
    base_images:
      spark-py: {image: "apache/spark:4.0.0-python3"}
    code_envs:
      spark: {packages: ["pyspark==4.0.1"]}
    spark_configs:
      local-spark:
        type: local
        conf: {spark.sql.shuffle.partitions: 4, spark.sql.adaptive.enabled: true}
      k8s-spark:
        type: kubernetes
        base_image: spark-py
        namespace: spark-jobs
        registry: {url: "registry.example.com:5000/team"}
        image_pull_secrets: [regcred]
        service_account: spark
        node_selector: {pool: spark}
        tolerations:
          - {key: dedicated, operator: Equal, value: spark, effect: NoSchedule}
        driver: {cores: 0.5, core_limit: 1200m, memory: 4Gi}
        executor: {instances: 3, cores: 1.5, memory: 4Gi, memory_overhead: 512Mi}
        conf: {spark.sql.shuffle.partitions: 8}
      ml-spark:
        type: local
        allowed_groups: [ml-team]
"""


def load_error(tmp_path: Path, spark_yaml: str) -> str:
    write_config(tmp_path, {"base.yaml": BASE_CONFIG, "spark.yaml": spark_yaml})
    with pytest.raises(InvalidConfigError) as info:
        load_catalog(tmp_path)
    return str(info.value)


@pytest.fixture
def catalog(tmp_path: Path):
    write_config(tmp_path, {"base.yaml": BASE_CONFIG, "spark.yaml": SPARK})
    make_project(tmp_path, {"jobs/count.py": "print('count')\n"})
    return load_catalog(tmp_path)


@pytest.fixture
def k8s(catalog) -> KubernetesSparkConfig:
    config = catalog.spark_configs["k8s-spark"]
    assert isinstance(config, KubernetesSparkConfig)
    return config


@pytest.fixture
def job() -> SparkJob:
    return SparkJob(
        name="orders-count",
        image="registry.example.com:5000/team/apache/spark:4.0.0-python3",
        main_application_file="local:///dss/project/jobs/count.py",
        labels={"dss-airflow/dag_id": "orders"},
        env={"DSS_CODE_ENV": "spark"},
    )


# ------------------------------------------------------------------------------------- config errors
def test_spark_configs_load_with_string_conf(catalog):
    assert set(catalog.spark_configs) == {"local-spark", "k8s-spark", "ml-spark"}
    local = catalog.spark_configs["local-spark"]
    assert local.master == "local[2]"
    assert local.conf == {"spark.sql.shuffle.partitions": "4", "spark.sql.adaptive.enabled": "true"}


def test_bad_quantity_is_refused_with_its_field(tmp_path):
    message = load_error(
        tmp_path,
        """
        base_images: {spark-py: {image: "apache/spark:4.0.0"}}
        spark_configs:
          k: {type: kubernetes, base_image: spark-py, executor: {memory: 2 GB}}
        """,
    )
    assert "spark.yaml:4: spark_configs.k.executor.memory: '2 GB' is not a Kubernetes quantity" in message


def test_spark_style_megabytes_are_caught(tmp_path):
    message = load_error(
        tmp_path,
        """
        base_images: {spark-py: {image: "apache/spark:4.0.0"}}
        spark_configs:
          k: {type: kubernetes, base_image: spark-py, driver: {memory: 512m}}
        """,
    )
    assert "spark_configs.k.driver.memory: '512m' is not a usable amount of memory" in message
    assert "write '512Mi'" in message


def test_unknown_key_suggests_the_closest(tmp_path):
    message = load_error(
        tmp_path,
        """
        base_images: {spark-py: {image: "apache/spark:4.0.0"}}
        spark_configs:
          k:
            type: kubernetes
            base_image: spark-py
            executor: {instance: 2}
        """,
    )
    assert "spark_configs.k.executor.instance: unknown key 'instance'" in message
    assert "Did you mean 'instances'?" in message


def test_unknown_type_and_base_image(tmp_path):
    message = load_error(
        tmp_path,
        """
        base_images: {spark-py: {image: "apache/spark:4.0.0"}}
        spark_configs:
          a: {type: kubernetis, base_image: spark-py}
        """,
    )
    assert "spark_configs.a.type: unknown spark config type 'kubernetis'" in message
    assert "Did you mean 'kubernetes'?" in message
    message = load_error(
        tmp_path,
        """
        base_images: {spark-py: {image: "apache/spark:4.0.0"}}
        spark_configs:
          b: {type: kubernetes, base_image: spark_py}
        """,
    )
    assert "spark_configs.b.base_image: unknown base image 'spark_py'" in message
    assert "Did you mean 'spark-py'?" in message


def test_build_for_names_spark_configs_and_suggests_on_a_typo(tmp_path):
    spark = """
        base_images: {spark-py: {image: "apache/spark:4.0.0"}}
        spark_configs:
          k8s-spark: {type: kubernetes, base_image: spark-py}
        code_envs:
          jobs: {build_for: [docker-small, k8s-spark]}
        """
    write_config(tmp_path, {"base.yaml": BASE_CONFIG, "spark.yaml": spark})
    assert load_catalog(tmp_path).code_envs["jobs"].build_for == ["docker-small", "k8s-spark"]
    message = load_error(tmp_path, spark.replace("[docker-small, k8s-spark]", "[docker-small, k8s-sprak]"))
    assert (
        "spark.yaml:6: code_envs.jobs.build_for.1: unknown execution or spark config 'k8s-sprak'" in message
    )
    assert "Did you mean 'k8s-spark'?" in message


def test_a_name_cannot_be_both_an_execution_config_and_a_spark_config(tmp_path):
    message = load_error(
        tmp_path,
        """
        base_images: {spark-py: {image: "apache/spark:4.0.0"}}
        spark_configs:
          docker-small: {type: kubernetes, base_image: spark-py}
          local: {type: local}
        """,
    )
    assert (
        "spark.yaml:4: spark_configs.docker-small: spark config 'docker-small' has the name of an execution "
        f"config at {tmp_path / 'base.yaml'}:"
    ) in message
    assert "Rename one of them: code envs' build_for and the image ledger name both kinds alike" in message
    assert "spark.yaml:5: spark_configs.local: spark config 'local' has the name of the built-in" in message


def test_conf_may_not_carry_credentials_or_shadow_fields(tmp_path):
    message = load_error(
        tmp_path,
        """
        spark_configs:
          a: {type: local, conf: {spark.hadoop.fs.s3a.secret.key: hunter2}}
        """,
    )
    assert "looks like a credential; no credentials go in YAML" in message
    message = load_error(
        tmp_path,
        """
        base_images: {spark-py: {image: "apache/spark:4.0.0"}}
        spark_configs:
          b: {type: kubernetes, base_image: spark-py, conf: {spark.executor.memory: 8g}}
        """,
    )
    assert "conf 'spark.executor.memory' is set from this config's 'executor.memory'" in message


def test_local_master_must_be_local(tmp_path):
    message = load_error(tmp_path, "spark_configs:\n  a: {type: local, master: 'yarn'}\n")
    assert "master 'yarn' is not a local master" in message


def test_forbidden_group_is_refused(catalog):
    check_permission(catalog, "local-spark", "demo", section="spark_configs")
    with pytest.raises(PermissionDeniedError) as info:
        check_permission(catalog, "ml-spark", "demo", section="spark_configs")
    message = str(info.value)
    assert "project 'demo' (groups: analysts) may not use spark config 'ml-spark'" in message
    assert "spark_configs.ml-spark.allowed_groups" in message


def test_operator_refuses_forbidden_config_and_env_without_pyspark(catalog, tmp_path):
    from dss_airflow.operators.spark import DSSSparkOperator

    common: dict[str, Any] = {"application": "jobs/count.py", "config_dir": str(tmp_path)}
    DSSSparkOperator(task_id="ok", spark_config="local-spark", code_env="spark", **common)
    with pytest.raises(PermissionDeniedError, match="may not use spark config 'ml-spark'"):
        DSSSparkOperator(task_id="ml", spark_config="ml-spark", code_env="spark", **common)
    with pytest.raises(ConfigError) as info:
        DSSSparkOperator(task_id="plain", spark_config="local-spark", code_env="plain", **common)
    assert "code env 'plain' does not contain pyspark" in str(info.value)
    assert "Add a pyspark line (e.g. 'pyspark==4.0.1') to the packages of code env 'plain'" in str(info.value)
    with pytest.raises(ConfigError, match=r"unknown spark config 'local-sprak'.*Did you mean 'local-spark'"):
        DSSSparkOperator(task_id="typo", spark_config="local-sprak", code_env="spark", **common)
    with pytest.raises(ConfigError, match="recipe not found"):
        DSSSparkOperator(
            task_id="missing",
            spark_config="local-spark",
            code_env="spark",
            **{**common, "application": "x.py"},
        )


# ------------------------------------------------------------------------------- SparkApplication
def crd_schema() -> dict:
    if not CRD.is_file():
        pytest.skip(f"SparkApplication CRD not found at {CRD} (../shared/schemas is not checked out here)")
    import yaml

    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta2")
    return version["schema"]["openAPIV3Schema"]


def test_spark_application_validates_against_the_crd(k8s, job):
    import jsonschema

    app = build_spark_application(k8s, job)
    jsonschema.Draft7Validator(crd_schema()).validate(app)


def test_spark_application_keeps_resources_exactly(k8s, job):
    app = build_spark_application(k8s, job)
    assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2" and app["kind"] == "SparkApplication"
    assert app["metadata"]["namespace"] == "spark-jobs"
    spec = app["spec"]
    assert spec["image"] == job.image
    assert spec["mainApplicationFile"] == "local:///dss/project/jobs/count.py"
    assert spec["type"] == "Python" and spec["mode"] == "cluster" and spec["sparkVersion"] == "4.0.0"
    assert spec["imagePullSecrets"] == ["regcred"]
    assert spec["sparkConf"] == {"spark.sql.shuffle.partitions": "8"}
    driver, executor = spec["driver"], spec["executor"]
    # 0.5 CPU is requested as 0.5, not truncated to 0; Spark's integer task slots round up.
    assert driver["coreRequest"] == "0.5" and driver["cores"] == 1
    assert driver["coreLimit"] == "1200m"
    assert executor["coreRequest"] == "1.5" and executor["cores"] == 2
    # 4Gi is 4 GiB of heap, in the notation Spark parses; no division by 1.4.
    assert driver["memory"] == executor["memory"] == "4g" == spark_memory("4Gi")
    assert executor["memoryOverhead"] == "512m"
    assert executor["instances"] == 3
    toleration = {"key": "dedicated", "operator": "Equal", "value": "spark", "effect": "NoSchedule"}
    for component in (driver, executor):
        assert component["nodeSelector"] == {"pool": "spark"}
        assert component["tolerations"] == [toleration]
        assert component["serviceAccount"] == "spark"
        assert component["labels"] == {"dss-airflow/dag_id": "orders"}
        assert component["env"] == [{"name": "DSS_CODE_ENV", "value": "spark"}]


def test_memory_conversion_is_exact():
    assert spark_memory("4Gi") == "4g"
    assert spark_memory("1536Mi") == "1536m"
    assert spark_memory("1.5Gi") == "1536m"
    assert spark_memory("4G") == "3906250k"  # 4e9 bytes, not 4 GiB
    assert spark_memory("1000000001") == "1000000001b"


def test_the_provider_passes_our_spec_through_untouched(k8s, job):
    """template_spec without container_resources or a `kubernetes:` section skips the lossy mapping."""
    from airflow.providers.cncf.kubernetes.operators.custom_object_launcher import CustomObjectLauncher

    app = build_spark_application(k8s, job)
    launcher = CustomObjectLauncher(
        name=job.name,
        namespace=k8s.namespace,
        kube_client=None,  # type: ignore[arg-type]
        custom_obj_api=None,  # type: ignore[arg-type]
        template_body={"spark": build_spark_application(k8s, job)},  # type: ignore[arg-type]
    )
    assert launcher.body["spec"] == app["spec"]
    assert launcher.body["metadata"]["name"] == job.name


# ---------------------------------------------------------------------------------- spark-submit
def test_spark_submit_command(k8s, job):
    argv = build_spark_submit_command(
        k8s, job, api_server="https://10.0.0.1:6443", pod_template_file="/tmp/pod.json"
    )
    assert argv[:7] == [
        "spark-submit", "--master", "k8s://https://10.0.0.1:6443", "--deploy-mode", "cluster",
        "--name", "orders-count",
    ]  # fmt: skip
    assert argv[-1] == "local:///dss/project/jobs/count.py"
    pairs = {argv[i + 1] for i, arg in enumerate(argv) if arg == "--conf"}
    expected = {
        "spark.kubernetes.container.image=registry.example.com:5000/team/apache/spark:4.0.0-python3",
        "spark.kubernetes.namespace=spark-jobs",
        "spark.kubernetes.authenticate.driver.serviceAccountName=spark",
        "spark.kubernetes.container.image.pullSecrets=regcred",
        "spark.driver.cores=1",
        "spark.kubernetes.driver.request.cores=0.5",
        "spark.kubernetes.driver.limit.cores=1200m",
        "spark.driver.memory=4g",
        "spark.executor.instances=3",
        "spark.executor.cores=2",
        "spark.kubernetes.executor.request.cores=1.5",
        "spark.executor.memory=4g",
        "spark.executor.memoryOverhead=512m",
        "spark.kubernetes.node.selector.pool=spark",
        "spark.kubernetes.driver.podTemplateFile=/tmp/pod.json",
        "spark.kubernetes.executor.podTemplateFile=/tmp/pod.json",
        "spark.kubernetes.driver.label.dss-airflow/dag_id=orders",
        "spark.kubernetes.driverEnv.DSS_CODE_ENV=spark",
        "spark.sql.shuffle.partitions=8",
    }
    assert expected <= pairs, expected - pairs
    assert not [arg for arg in argv if any(word in arg.lower() for word in ("password", "token", "oauth"))]
    template = build_pod_template(k8s)
    assert template is not None
    assert template["spec"]["tolerations"][0]["key"] == "dedicated"


CODE_ENV_IMAGE = ImageRef(
    "registry.example.com:5000/team/dss-code-envs@sha256:" + "ef" * 32, "/opt/dss/env/bin/python"
)


def cluster_run(tmp_path: Path, mode: str, **arguments: Any) -> Any:
    """The prepared run of a Spark task on k8s-spark (folders and project on PVCs), image pinned."""
    from dss_airflow.backends.base import RunOptions
    from dss_airflow.operators.spark import DSSSparkOperator
    from dss_airflow.tasks.flow import RunKey, prepare_run

    on_pvcs = (
        BASE_CONFIG.replace("{path: raw}", "{path: raw, pvc: data, sub_path: raw}")
        .replace("{path: out}", "{path: out, pvc: data, sub_path: out}")
        .replace("        root: project\n", "        root: project\n        pvc: projects\n")
    )
    write_config(
        tmp_path,
        {
            "base.yaml": on_pvcs,
            "spark.yaml": SPARK.replace("type: kubernetes\n", f"type: kubernetes\n        mode: {mode}\n"),
        },
    )
    make_project(tmp_path, {"jobs/count.py": "print('count')\n"})
    catalog = load_catalog(tmp_path)
    operator = DSSSparkOperator(
        task_id="count", spark_config="k8s-spark", code_env="spark", config_dir=str(tmp_path), **arguments
    )
    ti = fake_context(dag_id="orders", task_id="count")["ti"]
    key = RunKey("count-1-u1", "u1", {"dss_airflow.dag_id": "orders", "dss_airflow.task_id": "count"})
    options = RunOptions(pinned_image=CODE_ENV_IMAGE)
    return catalog, prepare_run(operator.task(), catalog, ti, logging.getLogger(), options, key)


def test_spark_on_kubernetes_runs_the_code_env_image_with_managed_folders(tmp_path):
    import json

    import jsonschema

    catalog, prepared = cluster_run(
        tmp_path,
        "operator",
        application="jobs/count.py",
        inputs=["raw"],
        outputs={"counts": "out/daily"},
        recipe_params={"day": "2024-01-01"},
    )
    job = prepared.backend.job(prepared.spec)
    assert job.image == CODE_ENV_IMAGE.image, "the code env's image, not the bare Spark base image"
    assert job.main_application_file == "local:///opt/dss-airflow/runtime/runner.py"
    assert job.arguments == ("-",) and job.python == "/opt/dss/env/bin/python"
    context = json.loads(job.env["DSS_CONTEXT_JSON"])
    assert context["recipe"] == "/dss/project/jobs/count.py" and context["params"] == {"day": "2024-01-01"}
    assert context["inputs"] == {"raw": "/dss/in/raw"}
    staging = "/dss/out-root/out/.dss-staging/count-1-u1/counts"
    assert context["outputs"] == {"counts": staging}
    assert context["promote"] == [[staging, "/dss/out-root/out/daily"]], "the runner promotes in the driver"
    assert json.loads(job.env["DSS_SPARK"])["master"] is None, "cluster mode: the session keeps Spark's"
    assert job.labels["dss-airflow/dag-id"] == "orders"

    config = catalog.spark_configs["k8s-spark"]
    app = build_spark_application(config, job)
    jsonschema.Draft7Validator(crd_schema()).validate(app)
    spec = app["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
    mounts = {m["mountPath"]: m for m in spec["driver"]["volumeMounts"]}
    assert claims[mounts["/dss/project"]["name"]] == {"claimName": "projects", "readOnly": True}
    assert mounts["/dss/in/raw"]["subPath"] == "raw" and mounts["/dss/in/raw"]["readOnly"] is True
    assert mounts["/dss/out-root/out"]["readOnly"] is False
    assert {m["mountPath"] for m in spec["executor"]["volumeMounts"]} == {
        "/dss/project",
        "/dss/in/raw",
        "/dss/out-root/out",
    }, "executors read inputs and write output parts; only the driver has the run dir and the XCom file"
    assert {"/dss/run", "/airflow/xcom"} <= set(mounts)
    (sidecar,) = spec["driver"]["sidecars"]
    assert sidecar["name"] == "airflow-xcom-sidecar", "the provider's XCom extraction finds its sidecar"
    assert sidecar["securityContext"]["allowPrivilegeEscalation"] is False
    assert spec["sparkConf"]["spark.pyspark.python"] == "/opt/dss/env/bin/python"
    assert driver_resources_unchanged(spec)


def driver_resources_unchanged(spec: dict) -> bool:
    """The exact resources of the config survive the added volumes (as test_spark_application_... checks)."""
    driver, executor = spec["driver"], spec["executor"]
    return driver["coreRequest"] == "0.5" and driver["cores"] == 1 and executor["memory"] == "4g"


def test_spark_submit_gets_the_same_volumes_image_and_a_result_in_the_log(tmp_path):
    catalog, prepared = cluster_run(tmp_path, "spark-submit", application="jobs/count.py", outputs=["out"])
    assert prepared.spec.context["print_result"] is True, "no XCom sidecar: the result comes in the log"
    assert prepared.spec.context["result_file"] == "/dss/run/result.json"
    job = prepared.backend.job(prepared.spec)
    assert not job.driver_sidecars
    argv = build_spark_submit_command(
        catalog.spark_configs["k8s-spark"],
        job,
        api_server="https://10.0.0.1:6443",
        driver_pod_name="d-driver",
    )
    pairs = {argv[i + 1] for i, arg in enumerate(argv) if arg == "--conf"}
    expected = {
        f"spark.kubernetes.container.image={CODE_ENV_IMAGE.image}",
        "spark.kubernetes.driver.pod.name=d-driver",
        "spark.pyspark.python=/opt/dss/env/bin/python",
        "spark.kubernetes.driver.volumes.emptyDir.dss-run.mount.path=/dss/run",
    }
    assert expected <= pairs, expected - pairs
    for role in ("driver", "executor"):
        mounted = {
            pair.split("=", 1)[1]
            for pair in pairs
            if pair.startswith(f"spark.kubernetes.{role}.volumes.persistentVolumeClaim.")
            and ".mount.path=" in pair
        }
        assert mounted == {"/dss/project", "/dss/out-root/out"}, role
    assert argv[-2:] == ["local:///opt/dss-airflow/runtime/runner.py", "-"]


def test_result_line_of_the_driver_log():
    from dss_airflow.backends.spark_kubernetes import result_from_log

    log = 'x\n[dss-airflow] result-json: {"status": "success", "outputs": {"out": ["a"]}}\nbye\n'
    assert result_from_log(log) == {"status": "success", "outputs": {"out": ["a"]}}
    assert result_from_log("no result here") is None


def test_application_uris_run_as_is_without_folders(tmp_path):
    _, prepared = cluster_run(tmp_path, "operator", application="s3a://jobs/count.py", recipe_params={"n": 1})
    job = prepared.backend.job(prepared.spec)
    assert job.main_application_file == "s3a://jobs/count.py" and job.image == CODE_ENV_IMAGE.image
    assert job.env["DSS_RECIPE_PARAMS"] == '{"n": 1}' and not job.mounts
    with pytest.raises(ConfigError, match="given by URI runs as is, without managed-folder"):
        cluster_run(tmp_path / "uri", "operator", application="s3a://jobs/count.py", outputs=["out"])


def test_spark_on_kubernetes_needs_an_image_built_for_its_spark_config(catalog, tmp_path):
    from dss_airflow.images.lookup import image_for
    from dss_airflow.tasks.base import Placement
    from dss_airflow.tasks.spark import SparkTask

    resolved = SparkTask(Placement(code_env="spark"), "jobs/count.py", "k8s-spark").resolve(catalog)
    with pytest.raises(
        ImageNotBuiltError, match=r"on spark config 'k8s-spark'.*images build spark --config k8s-spark"
    ):
        image_for(catalog, resolved)
