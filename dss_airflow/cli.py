"""``dss-airflow`` command line: admin tools that need no running Airflow.

dss-airflow config validate [--config-dir DIR] [--check-connections]   # every problem, file:line, fix
dss-airflow config show [--config-dir DIR]       # what was loaded, and from where
dss-airflow images status [ENV ...] | images log ENV [--config CFG]   # from the ledger, on any host
dss-airflow notebook serve --code-env ENV --execution-config CFG [--port N] [--folder NAME ...]
dss-airflow notebook stop [NAME ... | --all]     # notebook list: the servers started from here
dss-airflow notebook kernels install|list|remove # Jupyter kernels that run in containers
dss-airflow gc [--dry-run] [--config-dir DIR]     # what killed tries left: containers, staging, run dirs
dss-airflow usage [--dag D] [--since 7d]         # what recent runs used, per task and config, and advice
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dss_airflow.errors import DSSAirflowError

if TYPE_CHECKING:
    from collections.abc import Callable

    from dss_airflow.config.catalog import Catalog
    from dss_airflow.images.service import ImageService


@dataclass(frozen=True)
class ConfigValidation:
    """What ``config validate`` says about a config directory (the CLI prints it, the admin page shows it)."""

    valid: bool
    summary: str  # the verdict line (or the first line of the problems)
    problems: str = ""  # every problem with file:line, field path, fix and suggestion
    warnings: tuple[str, ...] = ()
    catalog: Catalog | None = field(default=None, repr=False, compare=False)  # when valid


def config_validation(config_dir: Path | None = None) -> ConfigValidation:
    """Validate ``config_dir`` (default: the configured one), as ``dss-airflow config validate`` does."""
    from dss_airflow.config.catalog import SECTION_KINDS
    from dss_airflow.config.loader import explicit_config_dir, load_catalog
    from dss_airflow.errors import InvalidConfigError
    from dss_airflow.settings import default_config_dir

    directory = explicit_config_dir(config_dir) if config_dir else default_config_dir()
    try:
        catalog = load_catalog(directory)
    except InvalidConfigError as exc:
        return ConfigValidation(False, str(exc).splitlines()[0], problems=str(exc))
    if not directory.is_dir():
        default = "using the embedded default (one 'local' execution config)"
        return ConfigValidation(True, f"{directory}: no config directory; {default}", catalog=catalog)
    counts = {f"{kind}s": len(getattr(catalog, section)) for section, kind in SECTION_KINDS.items()}
    summary = f"{directory}: valid (" + ", ".join(f"{n} {kind}" for kind, n in counts.items()) + ")"
    return ConfigValidation(True, summary, warnings=tuple(catalog.warnings), catalog=catalog)


def _config_validate(config_dir: Path | None, check_connections: bool = False) -> int:
    report = config_validation(config_dir)
    if report.problems:
        print(report.problems, file=sys.stderr)
        return 1
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(report.summary)
    if check_connections and report.catalog is not None:
        return _check_connections(report.catalog)
    return 0


#: The connection type each kind of connection field expects (the providers define them).
CONNECTION_TYPES = {
    "connection_id": "docker",
    "kubernetes_conn_id": "kubernetes",
    "state_conn_id": "postgres",
}


def connection_type(conn_id: str) -> str | None:
    """The type of an Airflow connection ("" when it has none), None when Airflow has none of that id;
    looked up as ``airflow connections get`` does (secrets backends, ``AIRFLOW_CONN_*``, the metadata
    database: outside a task, the SDK's ``BaseHook.get_connection`` never reads it). Imports Airflow."""
    from airflow.models.connection import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return str(Connection.get_connection_from_secrets(conn_id).conn_type or "")
    except AirflowNotFoundException:
        return None


def _check_connections(catalog: Catalog) -> int:
    """Every Airflow connection the config names (and ``state_conn_id``), looked up as Airflow's own
    ``airflow connections get`` does (secrets backends, ``AIRFLOW_CONN_*``, the metadata database): each
    missing one where it is named, exit 1 if any. Imports Airflow (a second or so)."""
    import os

    from dss_airflow.settings import ENV_STATE_CONN_ID, state_conn_id

    named = [
        (conn_id, field, f"{file}:{line}" if line else file)
        for conn_id, field, (file, line) in catalog.named_connections()
    ]
    state = state_conn_id()
    if state:
        where = (
            f"${ENV_STATE_CONN_ID}" if os.environ.get(ENV_STATE_CONN_ID) else "[dss_airflow] state_conn_id"
        )
        named.append((state, "state_conn_id", where))
    types = {conn_id: connection_type(conn_id) for conn_id in sorted({conn_id for conn_id, _, _ in named})}
    for conn_id, field_path, where in named:
        expected = CONNECTION_TYPES[field_path.rsplit(".", 1)[-1]]
        if types[conn_id] is None:
            print(
                f"{where}: {field_path}: Airflow connection {conn_id!r} does not exist. Fix: `airflow "
                f"connections add {conn_id} --conn-type {expected} ...`, AIRFLOW_CONN_{conn_id.upper()} or a "
                "secrets backend, or name an existing connection",
                file=sys.stderr,
            )
        elif types[conn_id] != expected:
            warning = f"connection {conn_id!r} is of type {types[conn_id]!r}, not {expected!r}"
            print(f"warning: {where}: {field_path}: {warning}", file=sys.stderr)
    missing = [conn_id for conn_id, conn_type in types.items() if conn_type is None]
    summary = f"connections: {len(types)} named, {len(missing)} missing"
    print(summary + (f" ({', '.join(missing)})" if missing else ""))
    return 1 if missing else 0


def _config_show(config_dir: Path | None) -> int:
    from dss_airflow.config.catalog import SECTION_KINDS, TYPED_SECTIONS
    from dss_airflow.config.loader import get_catalog

    catalog = get_catalog(config_dir)
    for section in SECTION_KINDS:
        print(f"{section}:")
        for name, item in sorted(getattr(catalog, section).items()):
            file, line = catalog.where(section, name)
            kind = f" ({item.type})" if section in TYPED_SECTIONS else ""
            print(f"  {name}{kind}  [{file}{':' + str(line) if line else ''}]")
    print(f"defaults: {catalog.defaults.model_dump()}")
    return 0


def _progress_printer(quiet_logs: bool) -> Callable[[str, str, str], None]:
    """Progress for people: one coloured line per step, build logs streamed dimmed (unless --quiet)."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    styles = {
        "building": "bold cyan",
        "built": "green",
        "switched": "bold green",
        "failed": "bold red",
        "reused": "green",
        "cached": "green",
        "smoke": "magenta",
        "pushing": "cyan",
        "copying": "cyan",
        "copied": "green",
        "removed": "yellow",
    }

    def show(event: str, subject: str, message: str) -> None:
        if event == "log":
            if not quiet_logs:
                console.print(f"  [dim]{subject} | {message}[/dim]", markup=True, soft_wrap=True)
            return
        style = styles.get(event, "white")
        console.print(f"[{style}]{event:>9}[/{style}] {subject}: {message}", soft_wrap=True)

    return show


def _images(args: argparse.Namespace) -> int:
    from dss_airflow.config.loader import get_catalog
    from dss_airflow.images.service import ImageService

    catalog = get_catalog(args.config_dir)
    service = ImageService(catalog, progress=_progress_printer(getattr(args, "quiet", False)))
    handlers = {
        "plan": _images_plan,
        "build": _images_build,
        "build-base": lambda s, a: _build_bases(s, a.names or sorted(catalog.base_images), a.force),
        "status": _images_status,
        "log": _images_log,
        "rollback": _images_rollback,
        "build-job": _images_build_job,
    }
    return handlers[args.command](service, args)


def _images_plan(service: ImageService, args: argparse.Namespace) -> int:
    plan = service.planner.plan(args.envs or None, args.config)
    for item in plan:
        reasons = "; ".join(item.reasons)
        tag = f" -> {item.tag}" if item.tag else ""
        print(f"{item.action:>10}  {item.target}{tag}" + (f"  ({reasons})" if reasons else ""))
    counts = {
        action: sum(item.action == action for item in plan)
        for action in ("build", "up to date", "blocked", "unknown")
    }
    print(", ".join(f"{n} {action}" for action, n in counts.items()))
    return 0


def _images_build(service: ImageService, args: argparse.Namespace) -> int:
    envs = args.envs or None
    if not envs and not args.all:
        print("name the code envs to build, or --all", file=sys.stderr)
        return 2
    if args.base:
        targets = service.planner.targets(envs, args.config)
        bases = sorted({service.planner.base_name_of(t.config) for t in targets})
        _build_bases(service, [b for b in bases if service.catalog.base_images[b].buildable], args.force)
    report = service.build(envs, args.config, force=args.force, refresh=args.refresh, jobs=args.jobs)
    print(
        f"built {len(report.built)}, reused {len(report.reused)}, switched {len(report.switched)}, "
        f"up to date {len(report.up_to_date)}, failed {len(report.failed)}, "
        f"unreachable {len(report.unreachable)}"
    )
    for target, error in report.failed.items():
        print(f"FAILED {target}: {error}", file=sys.stderr)
    for target, error in report.unreachable.items():
        print(f"UNREACHABLE {target}: {error}", file=sys.stderr)
    return 0 if report.ok else 1


def _images_status(service: ImageService, args: argparse.Namespace) -> int:
    for env in args.envs or sorted(service.catalog.code_envs):
        for config, state in sorted(service.ledger.read(env).items()):
            if args.config and config not in args.config:
                continue
            current = state.current.image if state.current else "-"
            line = f"{env}/{config}: {state.status}; current {current}; {len(state.previous)} previous"
            if state.last_error:
                line += f"; last error: {state.last_error.splitlines()[0]}"
            if state.last_log:
                line += f"; log {state.last_log}"
            print(line)
    return 0


def _images_log(service: ImageService, args: argparse.Namespace) -> int:
    """The last build log of each pair of the env, from the ledger (any host sharing it can read it)."""
    service.catalog.lookup("code_envs", args.env, field="env")
    found = 0
    for config, state in sorted(service.ledger.read(args.env).items()):
        if args.config and config not in args.config:
            continue
        text = service.ledger.log(state.last_log) if state.last_log else None
        if text is None:
            print(f"{args.env}/{config}: no build log stored ({state.status})", file=sys.stderr)
            continue
        found += 1
        print(f"=== {args.env}/{config}: {state.status}, log {state.last_log}")
        print(text, end="" if text.endswith("\n") else "\n")
    if not found:
        print(
            f"no build log of {args.env}: build it with `dss-airflow images build {args.env}`",
            file=sys.stderr,
        )
        return 1
    return 0


def _images_build_job(service: ImageService, args: argparse.Namespace) -> int:
    import yaml

    from dss_airflow.images.plan import Target

    if not args.config or len(args.config) != 1:
        print("name one kubernetes execution or spark config: --config CFG", file=sys.stderr)
        return 2
    service.catalog.lookup("code_envs", args.env, field="env")
    service.planner.config(args.config[0], field="config")
    target = Target(args.env, args.config[0])
    if args.apply:
        record = service.build_in_cluster(target, push_secret=args.push_secret)
        print(f"{target}: now runs {record.image}")
        return 0
    manifests = service.incluster_build(target, push_secret=args.push_secret)
    print(yaml.safe_dump_all(manifests, sort_keys=False), end="")
    return 0


def _images_rollback(service: ImageService, args: argparse.Namespace) -> int:
    for target, record in service.rollback(args.env, args.config).items():
        print(f"{target}: now runs {record.image} (built {record.built_at})")
    return 0


def _build_bases(service: ImageService, names: list[str], force: bool) -> int:
    from dss_airflow.images.base import build_base_image

    for name in names:
        build_base_image(service.catalog, name, force=force, progress=service.progress)
    return 0


def _notebook(args: argparse.Namespace) -> int:
    """JupyterLab in a code env's container: only the URL (with its token) goes to stdout, once."""
    from dss_airflow import notebook_server
    from dss_airflow.config.loader import get_catalog

    catalog = get_catalog(args.config_dir)
    if args.command == "kernels":
        return _notebook_kernels(catalog, args)
    if args.command == "serve":
        print(f"starting JupyterLab: code env {args.code_env}, {args.execution_config}...", file=sys.stderr)
        server = notebook_server.serve(
            catalog,
            code_env=args.code_env,
            execution_config=args.execution_config,
            project=args.project,
            port=args.port,
            folders=args.folder,
            show_url=_show_notebook_url,
        )
        print(f"stop it with: dss-airflow notebook stop {server.name}", file=sys.stderr)
        return 0
    if args.command == "stop":
        if not args.names and not args.all:
            print("name the servers to stop (see `dss-airflow notebook list`), or --all", file=sys.stderr)
            return 2
        for name in notebook_server.stop(catalog, args.names, every=args.all):
            print(f"removed {name}")
        return 0
    for listed in notebook_server.list_servers(catalog):
        print(
            f"{listed['name']}  {listed['status']}  {listed['url']}  code env {listed['code_env']}, "
            f"execution config {listed['execution_config']}, project {listed['project']}"
        )
    return 0


def _notebook_kernels(catalog: Any, args: argparse.Namespace) -> int:
    """Kernelspecs whose kernels run in containers (dss_airflow.notebook_kernels)."""
    from dss_airflow import notebook_kernels

    if args.action == "install":
        names = notebook_kernels.install(
            catalog, project=args.project, folders=args.folder, prefix=args.prefix
        )
        for name in names:
            print(f"installed kernel {name}")
        if not names:
            print(
                "no code env with notebook: true on a local docker config this project may use",
                file=sys.stderr,
            )
        return 0
    if args.action == "remove":
        if not args.names and not args.all:
            print(
                "name the kernels to remove (see `dss-airflow notebook kernels list`), or --all",
                file=sys.stderr,
            )
            return 2
        for name in notebook_kernels.remove(args.names, every=args.all, prefix=args.prefix):
            print(f"removed kernel {name}")
        return 0
    for name, directory in sorted(notebook_kernels.installed(args.prefix).items()):
        print(f"{name}  {directory}")
    return 0


def _show_notebook_url(url: str) -> None:
    print("JupyterLab is up; open this URL (its token is a password: do not share it):", file=sys.stderr)
    print(url, flush=True)


def _add_notebook_commands(commands: Any) -> None:
    notebook = commands.add_parser("notebook", help="JupyterLab in a code env's container")
    notebook_commands = notebook.add_subparsers(dest="command", required=True)
    serve = notebook_commands.add_parser("serve", help="start JupyterLab on loopback with a token")
    serve.add_argument("--code-env", required=True, help="a code env with notebook: true")
    serve.add_argument("--execution-config", required=True, help="a docker execution config (its limits)")
    serve.add_argument("--project", default=None, help="default: defaults.project or the only project")
    serve.add_argument("--port", type=int, default=None, help="loopback port (default: a free one)")
    serve.add_argument(
        "--folder",
        action="append",
        default=[],
        help="managed folder mounted at /dss/folders/NAME (repeatable)",
    )
    stop = notebook_commands.add_parser("stop", help="remove notebook servers")
    stop.add_argument("names", nargs="*", help="server names (see notebook list)")
    stop.add_argument("--all", action="store_true", help="every server started from this state directory")
    notebook_commands.add_parser("list", help="servers started from this state directory")
    kernels = notebook_commands.add_parser("kernels", help="Jupyter kernels that run in containers")
    kernel_actions = kernels.add_subparsers(dest="action", required=True)
    install = kernel_actions.add_parser("install", help="one kernelspec per (notebook env, docker config)")
    where = install.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="in the user's Jupyter data dir (default)")
    where.add_argument("--prefix", default=None, help="under PREFIX/share/jupyter/kernels (e.g. a venv)")
    install.add_argument("--project", default=None, help="default: defaults.project or the only project")
    install.add_argument("--folder", action="append", default=[], help="managed folder at /dss/folders/NAME")
    listing = kernel_actions.add_parser("list", help="installed dss_airflow kernelspecs")
    remove = kernel_actions.add_parser("remove", help="remove dss_airflow kernelspecs")
    remove.add_argument("names", nargs="*")
    remove.add_argument("--all", action="store_true")
    for action in (listing, remove):
        action.add_argument("--prefix", default=None, help="under PREFIX/share/jupyter/kernels")
    for sub in (serve, stop, notebook_commands.choices["list"], kernels):
        sub.add_argument("--config-dir", type=Path, default=None, help="default: $DSS_AIRFLOW_CONFIG")


IMAGE_COMMANDS = {
    "plan": "what a build would do, and why",
    "build": "build, smoke-test and switch code-env images",
    "build-base": "build base images",
    "status": "current and previous images, last build",
    "log": "print the last build log of an env's pairs",
    "rollback": "make the previous image current again",
    "build-job": "print (or --apply: run) the Kubernetes Job that builds an image in the cluster",
}


def _add_image_arguments(sub: argparse.ArgumentParser, name: str) -> None:
    sub.add_argument("--config-dir", type=Path, default=None, help="default: $DSS_AIRFLOW_CONFIG")
    if name in ("rollback", "build-job", "log"):
        sub.add_argument("env")
    elif name == "build-base":
        sub.add_argument("names", nargs="*", help="base images (default: all buildable)")
    else:
        sub.add_argument("envs", nargs="*", help="code envs (default: all)")
    if name != "build-base":
        sub.add_argument("--config", action="append", help="execution or spark config (repeatable)")
    if name in ("build", "build-base"):
        sub.add_argument("--force", action="store_true", help="rebuild even when up to date")
    if name == "build":
        sub.add_argument("--all", action="store_true", help="every code env")
        sub.add_argument("--base", action="store_true", help="build the base images first")
        sub.add_argument("--refresh", action="store_true", help="re-resolve package locks")
        sub.add_argument("--jobs", type=int, default=2, help="concurrent builds (default 2)")
        sub.add_argument("--quiet", action="store_true", help="do not stream build logs")
    if name == "build-job":
        sub.add_argument("--push-secret", help="dockerconfigjson secret (default: the config's pull secret)")
        sub.add_argument(
            "--apply",
            action="store_true",
            help="run the Job in the config's cluster, wait for it and make its image current",
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dss-airflow", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="group", required=True)
    config = commands.add_parser("config", help="check and inspect the YAML config")
    config_commands = config.add_subparsers(dest="command", required=True)
    subcommands = (("validate", "report every problem of the config"), ("show", "list what is defined"))
    for name, help_text in subcommands:
        sub = config_commands.add_parser(name, help=help_text)
        sub.add_argument("--config-dir", type=Path, default=None, help="default: $DSS_AIRFLOW_CONFIG")
    config_commands.choices["validate"].add_argument(
        "--check-connections",
        action="store_true",
        help="also look up every Airflow connection the config names (exit 1 if one is missing)",
    )
    images = commands.add_parser("images", help="code-env and base images")
    image_commands = images.add_subparsers(dest="command", required=True)
    for name, help_text in IMAGE_COMMANDS.items():
        _add_image_arguments(image_commands.add_parser(name, help=help_text), name)
    k8s = commands.add_parser("k8s", help="Kubernetes: render what would be applied")
    k8s_commands = k8s.add_subparsers(dest="command", required=True)
    render = k8s_commands.add_parser("render", help="print the pod YAML of a task (no cluster needed)")
    render.add_argument("dag_id")
    render.add_argument("task_id")
    render.add_argument("--config", help="execution config to render with (default: the task's)")
    render.add_argument("--dags-folder", type=Path, default=None, help="default: Airflow's dags_folder")
    _add_notebook_commands(commands)
    gc = commands.add_parser("gc", help="remove what killed tries left (containers, staging, run dirs)")
    gc.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    gc.add_argument("--config-dir", type=Path, default=None, help="default: $DSS_AIRFLOW_CONFIG")
    usage = commands.add_parser("usage", help="what recent runs used, per task and execution config")
    usage.add_argument("--dag", default=None, help="only this DAG")
    usage.add_argument(
        "--since", type=_period, default="7d", help="how far back: 30m, 12h, 7d, 2w (default 7d)"
    )
    usage.add_argument("--config-dir", type=Path, default=None, help="default: $DSS_AIRFLOW_CONFIG")
    return parser


def _period(text: str) -> Any:
    from dss_airflow.usage_report import parse_since

    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _usage(args: argparse.Namespace) -> int:
    """Recorded runs from Airflow's metadata database (imports Airflow: a second or two)."""
    from datetime import UTC, datetime

    from dss_airflow.config.loader import get_catalog
    from dss_airflow.usage_report import read_recorded_runs, summarise, usage_table

    runs = read_recorded_runs(args.dag, datetime.now(UTC) - args.since)
    if not runs:
        where = f" of DAG {args.dag!r}" if args.dag else ""
        print(f"no recorded runs of dss_airflow tasks{where} in the last {args.since}", file=sys.stderr)
        return 0
    print(usage_table(summarise(runs, get_catalog(args.config_dir))))
    return 0


def _gc(args: argparse.Namespace) -> int:
    from dss_airflow.config.loader import get_catalog
    from dss_airflow.gc import sweep_all

    swept = sweep_all(get_catalog(args.config_dir), dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    for path in swept.directories:
        print(f"{verb} {path}")
    for name in swept.containers:
        print(f"{verb} container {name}")
    for problem in swept.unreachable:
        print(f"skipped: {problem}", file=sys.stderr)
    print(f"{verb} {len(swept.directories)} directories, {len(swept.containers)} containers")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.group == "k8s":
            import contextlib

            from dss_airflow.k8s_render import render_task

            with contextlib.redirect_stdout(sys.stderr):  # Airflow logs to stdout; keep it pure YAML
                manifest = render_task(args.dag_id, args.task_id, args.dags_folder, args.config)
            print(manifest, end="")
            return 0
        if args.group == "images":
            return _images(args)
        if args.group == "notebook":
            return _notebook(args)
        if args.group == "gc":
            return _gc(args)
        if args.group == "usage":
            return _usage(args)
        if args.command == "validate":
            return _config_validate(args.config_dir, args.check_connections)
        return _config_show(args.config_dir)
    except DSSAirflowError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
