"""The one flow every task kind goes through, up to the point where a backend runs it.

``prepare_run``: resolve (task > project > global, permissions) → the kind's plan → the backend of the
resolved config → paths as that backend's task sees them → the backend's spec. The operator runs the spec
and hands the result to :func:`finish_run`; ``dss-airflow k8s render`` and a resumed deferrable run call
``prepare_run`` too, so all three see the same run.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dss_airflow.backends import backend_for
from dss_airflow.config.resolve import TASK_LEVEL, is_templated
from dss_airflow.errors import ConfigError, ExecutionError
from dss_airflow.spec import LABEL_PREFIX, TaskRun, describe_spec
from dss_airflow.task_secrets import NO_SECRETS, fetch_secrets, redacted
from dss_airflow.tasks.base import Ran
from dss_airflow.usage import Limits, Usage, advise, config_limits, usage_line, usage_record

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from airflow.sdk import Context

    from dss_airflow.backends.base import Backend, RunOptions, RunResult, TaskLog
    from dss_airflow.config.catalog import Catalog
    from dss_airflow.config.resolve import ResolvedExecution
    from dss_airflow.spec import ContainerSpec
    from dss_airflow.task_secrets import SecretRefs, TaskSecrets
    from dss_airflow.tasks.base import TaskKind, TaskPlan


#: How a task's execution_config was set when nothing templated it.
ARGUMENT_ORIGIN = "chosen by the task's execution_config argument"
_PARAM_REFERENCE = re.compile(r"""\bparams(?:\.(\w+)|\[\s*["'](\w+)["']\s*\])""")


@dataclass(frozen=True)
class RunKey:
    """Which try this is: ``key`` names its staging directories, ``unique`` its container or pod, and
    ``labels`` identify the task instance (audit, and finding what an earlier try left behind)."""

    key: str
    unique: str
    labels: Mapping[str, str]

    @classmethod
    def of(cls, ti: Any, unique: str | None = None) -> RunKey:
        """A new try's key, or (``unique`` given) the key of a try being resumed."""
        unique = unique or secrets.token_hex(4)
        task_key = f"{ti.task_id}-{getattr(ti, 'try_number', 1)}".replace("/", "_")
        return cls(key=f"{task_key}-{unique}", unique=unique, labels=task_labels(ti))


def task_labels(ti: Any) -> dict[str, str]:
    """Labels identifying the task instance: for audit and to find leftovers of earlier tries."""
    labels = {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": str(getattr(ti, "map_index", -1)),
        "try_number": str(getattr(ti, "try_number", 1)),
    }
    return {f"{LABEL_PREFIX}.{key}": str(value) for key, value in labels.items()}


@dataclass(frozen=True)
class PreparedRun:
    """A run ready to start: the kind's plan, where it was resolved to run (and what chose that), its
    backend and its spec."""

    task: TaskKind
    resolved: ResolvedExecution
    plan: TaskPlan
    backend: Backend
    spec: ContainerSpec
    key: RunKey
    chosen: str

    def description(self) -> str:
        """What this try runs and why, as YAML for people (the operators' rendered ``resolved_execution``):
        the resolution, the spec the backend runs (environment *names* only) and the backend's own facts
        (daemon, cluster, the pod it submits)."""
        import yaml

        resolved = self.resolved
        described: dict[str, Any] = {
            "execution_config": resolved.execution_config_name,
            "chosen": self.chosen.removeprefix("chosen "),  # "by the global default", "in the trigger form…"
            "backend": resolved.execution_config.type,
        }
        if resolved.spark_config is not None:  # a Spark job runs where its spark config says
            how = "kubernetes" if resolved.spark_config.is_cluster else "local"
            described = {"spark_config": resolved.spark_config_name, "backend": f"spark ({how})"}
        described.update(project=resolved.project_name, code_env=resolved.code_env_name)
        described.update(self.backend.describe(self.spec))
        manifest = self.backend.manifest(self.spec)
        if manifest is None:
            described.update(describe_spec(self.spec))
        else:  # the pod says it all (image, command, env names, mounts, user, limits), and once
            described["pod"] = manifest
        header = "# What this try runs, as dss_airflow resolved it (environment values are never shown)\n"
        return header + str(yaml.dump(described, Dumper=yaml.CSafeDumper, sort_keys=False, width=110))


def prepare_run(
    task: TaskKind,
    catalog: Catalog,
    ti: Any,
    log: TaskLog,
    options: RunOptions,
    key: RunKey,
    origin: str = ARGUMENT_ORIGIN,
    secret_refs: SecretRefs = NO_SECRETS,
    read_secrets: Callable[[SecretRefs, str], TaskSecrets | None] = fetch_secrets,
) -> PreparedRun:
    """Resolve, plan, choose the backend, read the declared connections and variables from Airflow and
    build the spec (nothing runs yet: a missing connection fails here). ``origin`` says how the task's
    own execution_config was set (:func:`task_value_origin`), for when that is what chose it."""
    resolved = task.resolve(catalog)
    plan = task.plan(catalog, resolved, ti)
    chosen = origin if resolved.selected_by == TASK_LEVEL else f"chosen by the {resolved.selected_by}"
    log.info(
        "%s: project %r, code env %r, %s",
        plan.label[:1].upper() + plan.label[1:],
        resolved.project_name,
        resolved.code_env_name,
        _where(resolved, chosen),
    )
    backend = backend_for(catalog, resolved, log, options)
    if secret_refs and not backend.delivers_secrets:
        raise ConfigError(
            f"{plan.label} declares connections or variables, which "
            f"{_where(resolved, chosen)} cannot deliver",
            field="connections",
            fix="read them in the application from a Kubernetes Secret the spark config mounts, or run it on "
            "a local spark config",
        )
    values = read_secrets(secret_refs, ti.task_id)
    if secret_refs:
        log.info(
            "Connections %s and variables %s read from Airflow: the task reads them from its secrets file",
            list(secret_refs.connections),
            list(secret_refs.variables),
        )
    inputs, outputs = backend.plan_io(plan.inputs, plan.outputs, key.key)
    run = TaskRun(
        resolved=resolved,
        entrypoint=plan.entrypoint,
        inputs=inputs,
        outputs=outputs,
        params=plan.params,
        run_dir=backend.run_dir(key.key),
        task_labels=key.labels,
        env=plan.env,
        unique=key.unique,
        secrets=values,
    )
    return PreparedRun(task, resolved, plan, backend, backend.prepare(run), key, chosen)


def task_value_origin(template: object, context: Mapping[str, Any]) -> str:
    """How the task's own execution_config was set, said truthfully (log line, rendered description):
    as written in the DAG, from one DAG param — set when the run was triggered (trigger form or run
    conf) or left at its default — or from another template.

    ``template`` is the argument as written (before Airflow rendered it)."""
    if not is_templated(template):
        return ARGUMENT_ORIGIN
    text = str(template).strip()
    names = {attribute or key for attribute, key in _PARAM_REFERENCE.findall(text)}
    if len(names) == 1:
        (name,) = names
        conf = getattr(context.get("dag_run"), "conf", None) or {}
        params = context.get("params") or {}
        if name in conf and params.get(name) == conf[name]:  # unless conf may not override params
            return f"chosen in the trigger form (or run conf): params.{name}"
        return f"chosen by the default of DAG param params.{name} (not set when triggered)"
    if "dag_run.conf" in text:
        return f"chosen in the run conf: {text}"
    return f"chosen by the task's templated execution_config argument {text}"


def finish_run(
    prepared: PreparedRun,
    run: RunResult,
    log: TaskLog,
    record: Callable[[str, Any], None] | None = None,
) -> dict[str, Any]:
    """A failed run raises one error with the task's own error and the backend's; else the kind's XCom,
    with what the run used under ``resources``. A failed run's usage goes to ``record`` (the task's XCom
    key ``resources``: it has no return value). A task given secrets has them replaced by ``***`` in
    both, should its recipe have echoed one."""
    hide = redacted if prepared.spec.secrets is not None else (lambda value: value)
    resolved = prepared.resolved
    resources = report_usage(prepared, run, log)
    if not run.succeeded:
        if resources is not None and record is not None:
            record("resources", resources)
        result = run.result or {}
        cause = run.failure.cause if run.failure else None
        reason = (
            cause
            or result.get("error")
            or (str(run.failure) if run.failure else "the runner wrote no result")
        )
        where = f"{resolved.execution_config_name} ({resolved.execution_config.type})"
        if resolved.spark_config_name:
            where = f"spark config {resolved.spark_config_name}"
        message = f"{prepared.plan.label} failed on {where}: {reason}; "
        raise ExecutionError(
            hide(message + "its managed-folder outputs were left untouched"),
            logs=hide(run.failure.logs if run.failure else []),
            exit_code=run.failure.exit_code if run.failure else None,
        )
    for warning in (run.result or {}).get("warnings", []):
        log.warning("%s", warning)
    for ref in prepared.spec.outputs:
        files = run.promoted.get(ref.name, [])
        log.info("Output %r: %d file(s) in %s", ref.name, len(files), ref.host_destination)
    outcome: dict[str, Any] = hide(
        prepared.task.outcome(Ran(prepared.plan, resolved, prepared.spec, run), log)
    )
    if resources is not None:
        outcome["resources"] = resources
    return outcome


def report_usage(prepared: PreparedRun, run: RunResult, log: TaskLog) -> dict[str, Any] | None:
    """What the run used, in one task-log line, with advice (a warning when the config is too small, a
    hint when a smaller one would do); the XCom's ``resources``. None when nothing was measured (an
    image whose runtime predates the meter, a run killed before its first reading)."""
    resolved = prepared.resolved
    usage = Usage.from_reading((run.result or {}).get("resources") or run.usage)
    if usage is None:
        return None
    spark = resolved.spark_config is not None  # its spark config, not the execution config, sizes it
    limits = usage.limits(Limits() if spark else config_limits(resolved.execution_config))
    out_of_memory = run.failure is not None and run.failure.out_of_memory
    advice = None
    if not spark:
        advice = advise(
            prepared.backend.catalog,
            project=resolved.project_name,
            config_name=resolved.execution_config_name,
            code_env=resolved.code_env_name,
            limits=limits,
            pressure=usage.pressure(out_of_memory),
        )
    config = resolved.spark_config_name or resolved.execution_config_name
    line = usage_line(usage, limits) + (" (its last reading before it was killed)" if usage.snapshot else "")
    log.info("Resources of %s on %r: %s", prepared.plan.label, config, line)
    if advice is not None:
        say = log.warning if advice.level == "warning" else log.info
        say("%s %s", prepared.plan.label[:1].upper() + prepared.plan.label[1:], advice.text)
    return usage_record(
        usage,
        limits,
        execution_config=config,
        backend="spark" if spark else resolved.execution_config.type,
        project=resolved.project_name,
        code_env=resolved.code_env_name,
        advice=advice,
        out_of_memory=out_of_memory,
    )


def _where(resolved: ResolvedExecution, chosen: str) -> str:
    if resolved.spark_config is not None:
        config = resolved.spark_config
        how = "local" if not config.is_cluster else f"kubernetes, {getattr(config, 'mode', '')}"
        return f"spark config {resolved.spark_config_name!r} ({how})"
    kind = resolved.execution_config.type
    where = f"execution config {resolved.execution_config_name!r} ({kind}; {chosen})"
    if resolved.cluster_name:
        where += f", on cluster {resolved.cluster_name!r}"
    return where


def warn_unknown_conf_keys(context: Context, log: TaskLog) -> None:
    """A trigger conf key the DAG declares no param for is ignored by Airflow: a misspelled
    ``execution_confg`` would silently run on the default config, so say so in the task log."""
    from dss_airflow.errors import closest_name

    dag, dag_run = context.get("dag"), context.get("dag_run")
    declared = set(getattr(dag, "params", None) or {})
    conf = getattr(dag_run, "conf", None) or {}
    if not declared or not isinstance(conf, dict):
        return  # a DAG without params reads dag_run.conf itself
    for key in sorted(set(conf) - declared):
        suggestion = closest_name(key, declared)
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        log.warning(
            "Trigger conf key %r is not a param of this DAG and is ignored (params: %s)%s",
            key,
            ", ".join(sorted(declared)),
            hint,
        )
