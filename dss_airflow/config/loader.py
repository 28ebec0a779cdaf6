"""Load a config directory of YAML files into a validated :class:`Catalog`.

Every ``*.yaml``/``*.yml`` file below the directory (hidden directories aside) is a mapping of sections
(``execution_configs``, ``code_envs``, ``base_images``, ``managed_folders``, ``projects``,
``spark_configs``, ``clusters``, ``models``, ``defaults``); a section may be split over several files,
but a name may be defined once. All problems are collected and reported together, each with its file,
line and field path.

Loading is cached three ways: per process until a file it read (or a directory searched for them)
changes, so DAG files that validate names at parse time pay for it once; on disk, the validated catalog
by the content of its inputs, so a fresh task process builds no pydantic model; and each YAML file's
parse by its content.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError

from dss_airflow.config import disk_cache
from dss_airflow.config.catalog import (
    BUILTIN_LOCAL,
    CONNECTION_FIELDS,
    SECTION_KINDS,
    SECTIONS,
    TYPED_SECTIONS,
    Catalog,
    Location,
    config_files,
    fingerprint,
    lexical_path,
    resolve_path,
)
from dss_airflow.config.models import INHERIT, LOCAL, NAME_PATTERN, NONE_ALIASES, CodeEnv, Defaults
from dss_airflow.config.requirements import read_requirements_file
from dss_airflow.errors import (
    ConfigError,
    InvalidConfigError,
    PermissionDeniedError,
    UnknownNameError,
    closest_name,
)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping


# --------------------------------------------------------------------------------------------- YAML
class _LineMap:
    """Maps a key path inside one YAML file to the line where that key is written."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        self.duplicates: list[tuple[tuple[str, ...], int]] = []

    def walk(self, node: yaml.Node, path: tuple[str, ...] = ()) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                child = (*path, key)
                if key in seen:
                    self.duplicates.append((child, key_node.start_mark.line + 1))
                seen.add(key)
                self.lines[child] = key_node.start_mark.line + 1
                self.walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                child = (*path, str(index))
                self.lines[child] = item.start_mark.line + 1
                self.walk(item, child)

    def line(self, path: tuple[str, ...]) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None


#: Bump when what a parse produces changes, so cached parses of the same bytes are not reused.
PARSE_VERSION = b"1"


def _read_yaml(path: Path, raw: bytes | None = None) -> tuple[Any, _LineMap]:
    """One read and one parse (PyYAML's C loader) of a config file, with the line of every key; a parse
    is cached on disk by the file's content, so the DAG processor's fresh processes do not parse again."""
    raw = path.read_bytes() if raw is None else raw
    text = _utf8(path, raw)
    key = hashlib.sha256(PARSE_VERSION + b"\0" + raw).hexdigest()
    cached = _cached_parse(key)
    if cached is not None:
        return cached
    lines = _LineMap()
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}",
            file=path,
            line=mark.line + 1 if mark else None,
            fix="fix the YAML syntax (indentation, quotes, colons)",
        ) from exc
    finally:
        loader.dispose()
    if node is not None:
        lines.walk(node)
    _store_parse(key, data, lines)
    return data, lines


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is in PyYAML's wheels; kept safe without


def _utf8(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            file=path,
            line=line,
            fix="config files are UTF-8 YAML: re-save it as UTF-8, or move a file that is not config out "
            "of the config directory",
        ) from None


def _cached_parse(key: str) -> tuple[Any, _LineMap] | None:
    payload = disk_cache.cached_parse(key)
    if payload is None:
        return None
    data, keys, line_numbers, duplicates = payload
    lines = _LineMap()
    lines.lines = dict(zip(keys, line_numbers, strict=True))
    lines.duplicates = [(tuple(dup), line) for dup, line in duplicates]
    return data, lines


def _store_parse(key: str, data: Any, lines: _LineMap) -> None:
    disk_cache.store_parse(key, (data, list(lines.lines), list(lines.lines.values()), lines.duplicates))


# ------------------------------------------------------------------------------------------ loading
class _Collector:
    """What loading found so far: valid entries, where each was written, and every problem."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []
        self.locations: dict[tuple[str, ...], Location] = {}
        self.found: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS if section != "defaults"}
        self.defaults = Defaults()
        self.warnings: list[str] = []

    def add(self, problem: str, *, file: Path | str, line: int | None, field: str, **kw: Any) -> None:
        self.errors.append(ConfigError(problem, file=file, line=line, field=field, **kw))


def _pydantic_errors(
    exc: ValidationError, *, file: Path, lines: _LineMap, prefix: tuple[str, ...], raw: Any
) -> Iterator[ConfigError]:
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        ctx = error.get("ctx") or {}
        if error["type"] == "unknown_key":
            loc = (*loc, ctx["key"])
            yield ConfigError(
                f"unknown key {ctx['key']!r}",
                file=file,
                line=lines.line((*prefix, *loc)),
                field=".".join((*prefix, *loc)),
                fix="valid keys here: " + ", ".join(ctx["allowed"]),
                suggestion=ctx.get("suggestion"),
            )
            continue
        message = error["msg"].removeprefix("Value error, ")
        value = _value_at(raw, loc)
        yield ConfigError(
            message,
            file=file,
            line=lines.line((*prefix, *loc)),
            field=".".join((*prefix, *loc)),
            value=value,
            show_value=value is not None and not isinstance(value, dict | list),
        )


def _value_at(raw: Any, loc: tuple[str, ...]) -> Any:
    for part in loc:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return None
    return raw


def _validate_entry(
    section: str, name: str, raw: Any, *, file: Path, lines: _LineMap, out: _Collector
) -> BaseModel | None:
    prefix = (section, name)
    model: type[BaseModel] | None = SECTIONS[section]
    if section in TYPED_SECTIONS:
        types = TYPED_SECTIONS[section]
        kind = raw.get("type") if isinstance(raw, dict) else None
        if kind not in types:
            out.add(
                f"missing {SECTION_KINDS[section]} type"
                if kind is None
                else f"unknown {SECTION_KINDS[section]} type {kind!r}",
                file=file,
                line=lines.line((*prefix, "type")),
                field=f"{section}.{name}.type",
                fix="type is one of: " + ", ".join(types),
                suggestion=closest_name(str(kind), types) if kind else None,
            )
            return None
        model = types[str(kind)]
    assert model is not None
    try:
        return model.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        out.errors.extend(_pydantic_errors(exc, file=file, lines=lines, prefix=prefix, raw=raw))
        return None


def load_catalog(config_dir: Path | str) -> Catalog:
    """Read and validate every YAML file of ``config_dir``; raise InvalidConfigError listing all problems.

    A missing directory gives the built-in catalog (one ``local`` execution config), the embedded default.
    """
    config_dir = Path(config_dir).expanduser().resolve()
    files, directories = config_files(config_dir) if config_dir.is_dir() else ([], [config_dir])
    sources: tuple[Path, ...] = (*files, *directories)
    stamp = fingerprint(sources)  # taken before reading, so a file changed while it is read loads again
    contents = disk_cache.read_contents(files)
    key = disk_cache.catalog_key(config_dir, sources, contents)
    cached = disk_cache.cached_catalog(key)
    if cached is not None:
        for warning in cached.warnings:
            log.warning("%s", warning)
        same_sources = cached.sources == sources  # no requirements file was read: the first stamp holds
        return replace(cached, fingerprint=stamp if same_sources else fingerprint(cached.sources))
    out = _Collector()
    for path in files:
        _load_file(path, out, contents.get(path))
    out.found["execution_configs"].setdefault(LOCAL, BUILTIN_LOCAL)
    requirement_files = tuple(
        resolve_path(config_dir, env.requirements_file)
        for env in out.found["code_envs"].values()
        if isinstance(env, CodeEnv) and env.requirements_file
    )
    if requirement_files:
        sources += requirement_files
        stamp = fingerprint(sources)
    catalog = Catalog(
        config_dir=config_dir,
        defaults=out.defaults,
        locations=out.locations,
        sources=sources,
        fingerprint=stamp,
        warnings=tuple(out.warnings),
        **out.found,
    )
    if not out.errors:
        _check_references(catalog, out)
    if out.errors:
        raise InvalidConfigError(config_dir, out.errors)
    for warning in catalog.warnings:
        log.warning("%s", warning)
    disk_cache.store_catalog(key, catalog, requirement_files)
    return catalog


def _load_file(path: Path, out: _Collector, raw: bytes | None = None) -> None:
    try:
        data, lines = _read_yaml(path, raw)
    except ConfigError as exc:
        out.errors.append(exc)
        return
    for dup_path, dup_line in lines.duplicates:
        out.add("key defined twice in the same mapping", file=path, line=dup_line, field=".".join(dup_path))
    if data is None:
        out.warnings.append(f"{path}: the file is empty (or only comments): nothing in it is configured")
        return
    if not isinstance(data, dict):
        out.add(
            "a config file must be a mapping of sections",
            file=path,
            line=1,
            field="(top level)",
            fix="start the file with a section such as 'execution_configs:'",
        )
        return
    for section, entries in data.items():
        if section not in SECTIONS:
            out.add(
                f"unknown section {section!r}",
                file=path,
                line=lines.line((str(section),)),
                field=str(section),
                fix="sections are: " + ", ".join(SECTIONS),
                suggestion=closest_name(str(section), SECTIONS),
            )
        elif section == "defaults":
            out.locations[("defaults",)] = (str(path), lines.line(("defaults",)))
            out.defaults = _validate_entry_defaults(entries, file=path, lines=lines, out=out) or out.defaults
        elif not isinstance(entries, dict):
            out.add(
                "a section maps names to definitions",
                file=path,
                line=lines.line((section,)),
                field=section,
                fix=f"write '{section}:' then one indented '<name>:' per item",
            )
        else:
            for name, raw in entries.items():
                _load_entry(section, str(name), raw, file=path, lines=lines, out=out)


def _load_entry(section: str, name: str, raw: Any, *, file: Path, lines: _LineMap, out: _Collector) -> None:
    line = lines.line((section, name))
    if (section, name) in out.locations:
        first_file, first_line = out.locations[(section, name)]
        out.add(
            f"{SECTION_KINDS[section]} {name!r} is defined twice",
            file=file,
            line=line,
            field=f"{section}.{name}",
            fix=f"it is already defined at {first_file}:{first_line}",
        )
        return
    if not NAME_PATTERN.match(name):
        out.add(
            "invalid name",
            file=file,
            line=line,
            field=f"{section}.{name}",
            value=name,
            fix="names use lower-case letters, digits, '.', '_' and '-' (at most 63)",
        )
        return
    out.locations[(section, name)] = (str(file), line)
    for path in CONNECTION_FIELDS.get(section, ()):
        if (section, name, *path) in lines.lines:
            out.locations[(section, name, *path)] = (str(file), lines.lines[(section, name, *path)])
    entry = _validate_entry(section, name, raw, file=file, lines=lines, out=out)
    if entry is not None:
        out.found[section][name] = entry


def _validate_entry_defaults(raw: Any, *, file: Path, lines: _LineMap, out: _Collector) -> Defaults | None:
    try:
        return Defaults.model_validate(raw or {})
    except ValidationError as exc:
        out.errors.extend(_pydantic_errors(exc, file=file, lines=lines, prefix=("defaults",), raw=raw))
        return None


def _check_references(catalog: Catalog, out: _Collector) -> None:
    """Names that must exist elsewhere in the catalog, reported where they are written."""

    def check(
        section: str, name: str | None, at: tuple[str, ...], *, allow: frozenset[str] = frozenset()
    ) -> None:
        if name is None or name in allow:
            return
        items: Mapping[str, Any] = getattr(catalog, section)
        if name not in items:
            file, line = catalog.where(*at)
            error = UnknownNameError(
                SECTION_KINDS[section], name, items, field=".".join(at), file=file, line=line
            )
            out.errors.append(error)

    selection_values = frozenset({INHERIT, *NONE_ALIASES})
    for typed_section in TYPED_SECTIONS:  # container execution configs and kubernetes spark configs
        for name, config in getattr(catalog, typed_section).items():
            check("base_images", getattr(config, "base_image", None), (typed_section, name, "base_image"))
    _check_build_for(catalog, out)
    _check_paths_stay_inside(catalog, out)
    for name, env in catalog.code_envs.items():
        if env.requirements_file:
            _check_requirements_file(catalog, name, env.requirements_file, out)
    for name, project in catalog.projects.items():
        check(
            "execution_configs",
            project.default_execution_config,
            ("projects", name, "default_execution_config"),
            allow=selection_values,
        )
        check("code_envs", project.default_code_env, ("projects", name, "default_code_env"))
        _check_project_may_use_its_default(catalog, name, out)
        check(
            "clusters",
            project.default_cluster,
            ("projects", name, "default_cluster"),
            allow=frozenset({INHERIT}),
        )
    check(
        "execution_configs",
        catalog.defaults.execution_config,
        ("defaults", "execution_config"),
        allow=frozenset(NONE_ALIASES),
    )
    check("code_envs", catalog.defaults.code_env, ("defaults", "code_env"))
    for name, model in catalog.models.items():
        check("managed_folders", model.folder, ("models", name, "folder"))
        check("code_envs", model.code_env, ("models", name, "code_env"))
    check("projects", catalog.defaults.project, ("defaults", "project"))
    check("clusters", catalog.defaults.cluster, ("defaults", "cluster"))


def _check_project_may_use_its_default(catalog: Catalog, project_name: str, out: _Collector) -> None:
    """A project's own default execution config must be one its groups may use, or every task of the
    project that inherits it would fail at run time."""
    from dss_airflow.config.resolve import check_permission

    config_name = catalog.projects[project_name].default_execution_config
    if config_name in (INHERIT, *NONE_ALIASES) or config_name not in catalog.execution_configs:
        return
    try:
        check_permission(catalog, config_name, project_name)
    except PermissionDeniedError as exc:
        file, line = catalog.where("projects", project_name, "default_execution_config")
        out.add(
            exc.problem,
            file=file,
            line=line,
            field=f"projects.{project_name}.default_execution_config",
            value=config_name,
            fix=exc.fix,
        )


def _check_build_for(catalog: Catalog, out: _Collector) -> None:
    """``build_for`` names execution configs and spark configs, which therefore share one name space (the
    image ledger keys pairs by it too): a name defined as both is refused."""
    for name in sorted(catalog.execution_configs.keys() & catalog.spark_configs.keys()):
        file, line = catalog.where("spark_configs", name)
        if ("execution_configs", name) in catalog.locations:
            first_file, first_line = catalog.where("execution_configs", name)
            other = f"an execution config at {first_file}:{first_line}"
        else:
            other = "the built-in execution config"
        out.add(
            f"spark config {name!r} has the name of {other}",
            file=file,
            line=line,
            field=f"spark_configs.{name}",
            fix="rename one of them: code envs' build_for and the image ledger name both kinds alike",
        )
    configs = {**catalog.execution_configs, **catalog.spark_configs}
    for env_name, env in catalog.code_envs.items():
        if not env.managed and env.build_for != "all":
            file, line = catalog.where("code_envs", env_name, "build_for")
            out.add(
                "an unmanaged env (managed: false) gets no image, so it cannot be built for any config",
                file=file,
                line=line,
                field=f"code_envs.{env_name}.build_for",
                value=env.build_for,
                fix="remove build_for (unmanaged envs run on local configs, from their external_path), or "
                "make the env managed with a package list",
            )
            continue
        for index, name in enumerate(env.build_for if env.build_for != "all" else []):
            if name not in configs:
                at = ("code_envs", env_name, "build_for", str(index))
                file, line = catalog.where(*at)
                out.errors.append(
                    UnknownNameError(
                        "execution or spark config", name, configs, field=".".join(at), file=file, line=line
                    )
                )


def _check_paths_stay_inside(catalog: Catalog, out: _Collector) -> None:
    """Paths an admin writes stay inside their root: managed folders inside data_dir, files and project
    roots inside the config directory, or inside one of ``defaults.allowed_roots`` (so a ``..`` typo or
    an absolute path cannot make a run write, or a build read, anywhere on the worker). Checked on the
    strings, without touching the disk (50k folders in milliseconds); symbolic links are followed when a
    task uses a folder (``Catalog.folder_path``)."""
    data_dir, config_dir = catalog.data_dir, catalog.config_dir
    extra = [str(root) for root in catalog.allowed_roots]
    folder_roots, file_roots = [str(data_dir), *extra], [str(config_dir), *extra]
    candidates: list[tuple[tuple[str, ...], str, list[str]]] = [
        (("managed_folders", name, "path"), folder.path, folder_roots)
        for name, folder in catalog.managed_folders.items()
        if folder.path is not None
    ]
    envs = catalog.code_envs.items()
    candidates += [
        (at, value, file_roots)
        for at, value in (
            *((("code_envs", n, "requirements_file"), e.requirements_file) for n, e in envs),
            *((("code_envs", n, "resources", "path"), e.resources.path) for n, e in envs),
            *((("projects", n, "root"), p.root) for n, p in catalog.projects.items()),
            *((("base_images", n, f"dockerfile_{end}"), getattr(b, f"dockerfile_{end}"))
              for n, b in catalog.base_images.items() for end in ("prepend", "append")),
        )
        if value
    ]  # fmt: skip
    for at, value, roots in candidates:
        base = data_dir if roots is folder_roots else config_dir
        path = lexical_path(base, value)
        if not any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots):
            file, line = catalog.where(*at)
            out.add(
                f"path leads outside {'data_dir' if roots is folder_roots else 'the config directory'}",
                file=file,
                line=line,
                field=".".join(at),
                value=path,
                fix=f"keep it inside {roots[0]}, or list it (or a parent) in defaults.allowed_roots",
            )


def _check_requirements_file(catalog: Catalog, env_name: str, relative: str, out: _Collector) -> None:
    path = resolve_path(catalog.config_dir, relative)
    file, line = catalog.where("code_envs", env_name)
    field = f"code_envs.{env_name}.requirements_file"
    if not path.is_file():
        out.add(
            "requirements file not found",
            file=file,
            line=line,
            field=field,
            value=str(path),
            fix="paths are relative to the config directory",
        )
        return
    try:
        read_requirements_file(path)
    except ValueError as exc:
        out.add(f"{path}: {exc}", file=file, line=line, field=field)


# ------------------------------------------------------------------------------------------ caching
_CACHE: dict[Path, Catalog] = {}
_CACHE_LOCK = threading.Lock()
_CONFIG_DIRS: dict[tuple[str, str | None, str | None, str], Path] = {}


def explicit_config_dir(config_dir: Path | str) -> Path:
    """A config directory someone named (``--config-dir``, ``config_dir=``) must exist: only the *default*
    one falls back to the embedded catalog, so a typo never runs everything on the built-in default."""
    path = Path(config_dir).expanduser().resolve()
    if not path.is_dir():
        siblings = [p.name for p in path.parent.iterdir() if p.is_dir()] if path.parent.is_dir() else []
        raise ConfigError(
            "config directory not found",
            field="config_dir",
            value=str(path),
            fix="name an existing directory of YAML files, or leave it out to use the default "
            "($DSS_AIRFLOW_CONFIG)",
            suggestion=closest_name(path.name, siblings),
        )
    return path


def _config_dir_of(config_dir: Path | str | None) -> Path:
    """The resolved config directory, remembered per (argument, environment, working directory): DAG files
    ask once per task, and resolving it is most of what a cached :func:`get_catalog` would cost."""
    from dss_airflow.settings import ENV_CONFIG_DIR, default_config_dir

    key = (str(config_dir or ""), os.environ.get(ENV_CONFIG_DIR), os.environ.get("AIRFLOW_HOME"), os.getcwd())
    path = _CONFIG_DIRS.get(key)
    if path is None:
        path = _CONFIG_DIRS[key] = explicit_config_dir(config_dir) if config_dir else default_config_dir()
    return path


def get_catalog(config_dir: Path | str | None = None) -> Catalog:
    """The catalog of ``config_dir`` (default: ``default_config_dir()``), cached until the files change."""
    path = _config_dir_of(config_dir)
    with _CACHE_LOCK:
        cached = _CACHE.get(path)
    if cached is not None and fingerprint(cached.sources) == cached.fingerprint:
        return cached
    catalog = load_catalog(path)
    with _CACHE_LOCK:
        _CACHE[path] = catalog
    return catalog
