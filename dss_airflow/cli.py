"""``dss-airflow`` command line: admin tools that need no running Airflow.

dss-airflow config validate [--config-dir DIR]   # every problem with file:line and fix; exit 1 if any
dss-airflow config show [--config-dir DIR]       # what was loaded, and from where
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dss_airflow.errors import DSSAirflowError


def _config_validate(config_dir: Path | None) -> int:
    from dss_airflow.config.loader import InvalidConfigError, load_catalog
    from dss_airflow.settings import default_config_dir

    directory = config_dir or default_config_dir()
    try:
        catalog = load_catalog(directory)
    except InvalidConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    if not directory.is_dir():
        print(f"{directory}: no config directory; using the embedded default (one 'local' execution config)")
        return 0
    counts = {
        "execution configs": len(catalog.execution_configs),
        "code envs": len(catalog.code_envs),
        "base images": len(catalog.base_images),
        "managed folders": len(catalog.managed_folders),
        "projects": len(catalog.projects),
    }
    print(f"{directory}: valid (" + ", ".join(f"{n} {kind}" for kind, n in counts.items()) + ")")
    return 0


def _config_show(config_dir: Path | None) -> int:
    from dss_airflow.config.loader import get_catalog

    catalog = get_catalog(config_dir)
    for section in ("execution_configs", "code_envs", "base_images", "managed_folders", "projects"):
        print(f"{section}:")
        for name, item in sorted(getattr(catalog, section).items()):
            file, line = catalog.where(section, name)
            kind = f" ({item.type})" if section == "execution_configs" else ""
            print(f"  {name}{kind}  [{file}{':' + str(line) if line else ''}]")
    print(f"defaults: {catalog.defaults.model_dump()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dss-airflow", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="group", required=True)
    config = commands.add_parser("config", help="check and inspect the YAML config")
    config_commands = config.add_subparsers(dest="command", required=True)
    subcommands = (("validate", "report every problem of the config"), ("show", "list what is defined"))
    for name, help_text in subcommands:
        sub = config_commands.add_parser(name, help=help_text)
        sub.add_argument("--config-dir", type=Path, default=None, help="default: $DSS_AIRFLOW_CONFIG")
    args = parser.parse_args(argv)
    try:
        if args.command == "validate":
            return _config_validate(args.config_dir)
        return _config_show(args.config_dir)
    except DSSAirflowError as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
