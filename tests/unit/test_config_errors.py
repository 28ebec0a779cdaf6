"""Every bad input gets a clear error before anything runs: file, line, field path, value, fix, suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest

from dss_airflow.config.loader import load_catalog
from dss_airflow.config.models import KubernetesExecutionConfig
from dss_airflow.config.resolve import resolve_execution, resolve_recipe_path
from dss_airflow.errors import (
    ConfigError,
    DSSAirflowError,
    InvalidConfigError,
    PermissionDeniedError,
    UnknownNameError,
)
from tests.helpers import BASE_CONFIG, make_project, write_config


def load_with(tmp_path: Path, extra: str) -> InvalidConfigError:
    write_config(tmp_path, {"base.yaml": BASE_CONFIG, "extra.yaml": extra})
    with pytest.raises(InvalidConfigError) as info:
        load_catalog(tmp_path)
    return info.value


@pytest.fixture
def catalog(tmp_path: Path):
    write_config(tmp_path, {"base.yaml": BASE_CONFIG})
    make_project(tmp_path, {"recipes/ok.py": "print('ok')\n"})
    return load_catalog(tmp_path)


def test_example_config_loads():
    catalog = load_catalog(Path(__file__).resolve().parents[2] / "examples" / "config")
    assert {"local", "docker-small", "docker-gpu", "k8s-small"} <= set(catalog.execution_configs)


def test_all_errors_share_one_root():
    assert issubclass(InvalidConfigError, DSSAirflowError)
    assert issubclass(UnknownNameError, ConfigError)
    assert issubclass(PermissionDeniedError, ConfigError)


def test_unknown_execution_config_suggests_closest(catalog):
    with pytest.raises(UnknownNameError) as info:
        resolve_execution(catalog, project="demo", execution_config="docker-smal", code_env="plain")
    message = str(info.value)
    assert "execution_config: unknown execution config 'docker-smal'" in message
    assert "Did you mean 'docker-small'?" in message
    assert "'docker-restricted', 'docker-small', 'k8s', 'local'" in message


def test_unknown_code_env_suggests_closest(catalog):
    with pytest.raises(UnknownNameError, match=r"unknown code env 'plian'.*Did you mean 'plain'\?"):
        resolve_execution(catalog, project="demo", execution_config="local", code_env="plian")


def test_typoed_key_names_file_line_path_and_suggestion(tmp_path):
    error = load_with(
        tmp_path,
        """
        execution_configs:
          docker-big:
            type: docker
            base_image: base
            resources:
              memroy: 2g
        """,
    )
    assert len(error.errors) == 1
    message = str(error.errors[0])
    assert message.startswith(f"{tmp_path / 'extra.yaml'}:7: execution_configs.docker-big.resources.memroy")
    assert "unknown key 'memroy'" in message
    assert "Did you mean 'memory'?" in message
    assert "Valid keys here: cpus, memory, shm_size." in message


def test_unknown_section_and_type_suggest(tmp_path):
    error = load_with(
        tmp_path,
        """
        executon_configs: {}
        code_envs:
          x: {}
        """,
    )
    assert "unknown section 'executon_configs'" in str(error) and "Did you mean 'execution_configs'?" in str(
        error
    )
    error = load_with(tmp_path, "execution_configs:\n  d:\n    type: dokcer\n    base_image: base\n")
    assert "execution_configs.d.type: unknown execution config type 'dokcer'" in str(error)
    assert "Did you mean 'docker'?" in str(error)


@pytest.mark.parametrize(
    ("resources", "field", "expected"),
    [
        ("{requests: {memory: 2 GB}}", "resources.requests.memory", "'2 GB' is not a Kubernetes quantity"),
        ("{limits: {cpu: 1.5 cores}}", "resources.limits.cpu", "'1.5 cores' is not a Kubernetes quantity"),
        ("{limits: {memory: 2GB}}", "resources.limits.memory", "'2GB' is not a Kubernetes quantity"),
        (
            "{requests: {cpu: '2'}, limits: {cpu: 500m}}",
            "resources",
            "requests.cpu (2) is larger than limits.cpu",
        ),
    ],
)
def test_bad_kubernetes_quantity(tmp_path, resources, field, expected):
    error = load_with(
        tmp_path,
        f"""
        execution_configs:
          k8s-bad:
            type: kubernetes
            base_image: base
            resources: {resources}
        """,
    )
    message = str(error.errors[0])
    assert f"extra.yaml:6: execution_configs.k8s-bad.{field}:" in message
    assert expected in message


def test_good_kubernetes_quantities_load(tmp_path):
    write_config(
        tmp_path,
        {
            "base.yaml": BASE_CONFIG,
            "k.yaml": """
            execution_configs:
              k8s-ok:
                type: kubernetes
                base_image: base
                resources:
                  requests: {cpu: 0.5, memory: 2Gi, nvidia.com/gpu: 1}
                  limits: {cpu: "2", memory: 2Gi, ephemeral-storage: 10G}
            """,
        },
    )
    config = load_catalog(tmp_path).execution_configs["k8s-ok"]
    assert isinstance(config, KubernetesExecutionConfig)
    assert config.resources.requests == {"cpu": "0.5", "memory": "2Gi", "nvidia.com/gpu": "1"}


def test_bad_docker_size_explains_format(tmp_path):
    error = load_with(
        tmp_path,
        "execution_configs:\n  d:\n    type: docker\n    base_image: base\n    resources: {memory: 2 GB}\n",
    )
    message = str(error)
    assert "execution_configs.d.resources.memory" in message
    assert "'2 GB' is not a Docker size" in message and "'2g'" in message


@pytest.mark.parametrize(
    ("toleration", "expected"),
    [
        ("{key: gpu, operater: Exists}", "unknown key 'operater'"),
        ("{key: gpu, operator: Exist}", "Input should be 'Exists' or 'Equal'"),
        ("{key: gpu, operator: Exists, value: x}", "operator Exists takes no value"),
        (
            "{key: gpu, effect: NoSchedule, tolerationSeconds: 5}",
            "tolerationSeconds only applies to effect NoExecute",
        ),
    ],
)
def test_bad_tolerations(tmp_path, toleration, expected):
    error = load_with(
        tmp_path,
        "execution_configs:\n  k:\n    type: kubernetes\n    base_image: base\n"
        f"    tolerations: [{toleration}]\n",
    )
    assert "execution_configs.k.tolerations.0" in str(error)
    assert expected in str(error)


def test_unknown_reference_is_reported_where_written(tmp_path):
    error = load_with(tmp_path, "execution_configs:\n  d:\n    type: docker\n    base_image: bsae\n")
    message = str(error.errors[0])
    assert "extra.yaml:2: execution_configs.d.base_image: unknown base image 'bsae'" in message
    assert "Did you mean 'base'?" in message


def test_duplicates_are_refused(tmp_path):
    error = load_with(tmp_path, "code_envs:\n  plain: {}\n")
    assert "code env 'plain' is defined twice" in str(error) and "base.yaml" in str(error)
    error = load_with(tmp_path, "code_envs:\n  a: {}\n  a: {python: '3.12'}\n")
    assert "extra.yaml:3: code_envs.a: key defined twice" in str(error)


def test_yaml_syntax_error_has_line(tmp_path):
    error = load_with(tmp_path, "code_envs:\n  a: {python: '3.11'\n  b: {}\n")
    assert "extra.yaml:" in str(error) and "not valid YAML" in str(error)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("--index-url https://evil.example/simple", "is a pip option"),
        ("pandas; rm -rf /", "is not a valid requirement"),
        ("pandas$(curl evil)", "contains shell syntax"),
        ("numpy `id`", "contains shell syntax"),
        ("requests | sh", "contains shell syntax"),
        ("mylib @ file:///opt/mylib", "installs from a local path"),
    ],
)
def test_package_lines_are_checked_against_injection(tmp_path, line, expected):
    error = load_with(tmp_path, f"code_envs:\n  bad:\n    packages:\n      - {line!r}\n")
    assert "code_envs.bad.packages.0" in str(error)
    assert expected in str(error) and line in str(error)


def test_requirements_file_lines_are_checked(tmp_path):
    write_config(
        tmp_path, {"reqs/bad.txt": "pandas==2.2.3\n# comment\n--extra-index-url http://x\nsix; rm -rf /\n"}
    )
    error = load_with(tmp_path, "code_envs:\n  bad:\n    requirements_file: reqs/bad.txt\n")
    assert "code_envs.bad.requirements_file" in str(error) and "line 3" in str(error)
    assert "'--extra-index-url http://x' is a pip option" in str(error)
    assert "line 4" in str(error), "every bad line is reported, not only the first"


@pytest.mark.parametrize(
    ("yaml_fragment", "expected"),
    [
        ("registry: {url: 'user:secret@registry.local:5000'}", "without scheme or credentials"),
        ("user: '0:0'", "never run as root"),
        ("user: 0", "never run as root"),
        ("user: 1000", 'quote it or write uid:gid, e.g. user: "1000:1000"'),
        ("user: root", "must be a numeric 'uid'"),
        ("docker_host: gpu-host:2376", "needs a scheme"),
        ("gpus: {count: 0}", "count must be a positive number"),
    ],
)
def test_bad_docker_fields(tmp_path, yaml_fragment, expected):
    error = load_with(
        tmp_path, f"execution_configs:\n  d:\n    type: docker\n    base_image: base\n    {yaml_fragment}\n"
    )
    assert "execution_configs.d" in str(error) and expected in str(error)


def test_forbidden_group_is_refused_with_fix(catalog):
    with pytest.raises(PermissionDeniedError) as info:
        resolve_execution(catalog, project="demo", execution_config="docker-restricted", code_env="plain")
    message = str(info.value)
    assert "project 'demo' (groups: analysts) may not use execution config 'docker-restricted'" in message
    assert "restricted to groups ml-team" in message
    assert "execution_configs.docker-restricted.allowed_groups" in message


def test_unmanaged_env_cannot_run_in_a_container(catalog):
    with pytest.raises(ConfigError) as info:
        resolve_execution(catalog, project="demo", execution_config="docker-small", code_env="external")
    assert "code env 'external' is not managed" in str(info.value)
    assert "execution_config='local'" in str(info.value)
    # ...but it may run locally
    assert resolve_execution(catalog, project="demo", execution_config="local", code_env="external")


def test_env_with_pythonpath_cannot_run_in_a_container(catalog):
    with pytest.raises(ConfigError, match="adds PYTHONPATH entries, which do not exist inside containers"):
        resolve_execution(catalog, project="demo", execution_config="docker-small", code_env="with-path")


def test_env_not_built_for_config(catalog):
    with pytest.raises(
        ConfigError, match="code env 'only-k8s' is not built for execution config 'docker-small'"
    ):
        resolve_execution(catalog, project="demo", execution_config="docker-small", code_env="only-k8s")


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        ("../outside.py", "recipe path escapes the project directory"),
        ("recipes/../../outside.py", "recipe path escapes the project directory"),
        ("/etc/passwd.py", "recipe path escapes the project directory"),
        ("recipes/ok.sh", "recipe must be a Python (.py) or R (.R) file"),
        ("recipes/missing.py", "recipe not found"),
    ],
)
def test_recipe_path_is_confined_to_the_project(catalog, recipe, expected):
    with pytest.raises(ConfigError) as info:
        resolve_recipe_path(catalog.project_root("demo"), recipe)
    assert expected in str(info.value)
    assert f"(got {recipe!r})" in str(info.value)


def test_recipe_symlink_escaping_the_project_is_refused(catalog, tmp_path):
    outside = tmp_path / "outside.py"
    outside.write_text("print('x')\n")
    (catalog.project_root("demo") / "recipes" / "link.py").symlink_to(outside)
    with pytest.raises(ConfigError, match="escapes the project directory through a symbolic link"):
        resolve_recipe_path(catalog.project_root("demo"), "recipes/link.py")


@pytest.mark.parametrize(
    ("content", "line"),
    [(b"defaults:\n  project: d\xe9mo\n", 2), (b"\x89PNG\r\n\x1a\n\x00\x00binary", 1)],
    ids=["latin-1", "binary"],
)
def test_a_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path, content, line):
    write_config(tmp_path, {"base.yaml": BASE_CONFIG})
    (tmp_path / "legacy.yaml").write_bytes(content)
    with pytest.raises(InvalidConfigError) as info:
        load_catalog(tmp_path)
    (error,) = info.value.errors
    assert error.file == str(tmp_path / "legacy.yaml") and error.line == line
    assert "not UTF-8 text" in str(error) and "re-save it as UTF-8" in str(error)


def test_parses_are_cached_by_content_and_a_change_is_seen(tmp_path, monkeypatch):
    import dss_airflow.config.loader as loader
    from dss_airflow.config import disk_cache

    monkeypatch.setenv("DSS_AIRFLOW_CACHE", str(tmp_path / "cache"))
    write_config(tmp_path, {"base.yaml": BASE_CONFIG})
    first = load_catalog(tmp_path)
    cached = list(disk_cache.parse_cache_dir().iterdir())
    assert len(cached) == 1, "one cached parse per distinct file content"
    monkeypatch.setattr(loader, "_Loader", None)  # a second load must not parse at all
    assert load_catalog(tmp_path).managed_folders == first.managed_folders
    assert load_catalog(tmp_path).where("managed_folders", "raw") == first.where("managed_folders", "raw")
    monkeypatch.undo()
    write_config(tmp_path, {"base.yaml": BASE_CONFIG.replace("raw: {path: raw}", "raw: {path: raw2}")})
    assert str(load_catalog(tmp_path).folder_path("raw")).endswith("raw2"), "new content, new parse"


def test_a_file_marshal_cannot_cache_gives_the_same_result_every_time(tmp_path):
    """YAML dates are not cached (marshal cannot write them): such a file is parsed each time, same error."""
    dated = BASE_CONFIG.replace("raw: {path: raw}", "raw: {path: raw, description: 2026-01-01}")
    write_config(tmp_path, {"base.yaml": dated})
    messages = []
    for _ in range(2):
        with pytest.raises(InvalidConfigError) as info:
            load_catalog(tmp_path)
        messages.append(str(info.value))
    assert messages[0] == messages[1] and "managed_folders.raw.description" in messages[0]


@pytest.mark.parametrize(
    ("fragment", "field", "root"),
    [
        ("managed_folders:\n  esc: {path: ../../../outside}\n", "managed_folders.esc.path", "data_dir"),
        ("managed_folders:\n  abs: {path: /srv/elsewhere}\n", "managed_folders.abs.path", "data_dir"),
        ("projects:\n  far: {root: ../far}\n", "projects.far.root", "the config directory"),
        (
            "code_envs:\n  r: {requirements_file: /etc/passwd}\n",
            "code_envs.r.requirements_file",
            "the config directory",
        ),
        (
            "code_envs:\n  s: {resources: {mode: copy, path: ../../secrets}}\n",
            "code_envs.s.resources.path",
            "the config directory",
        ),
    ],
)
def test_admin_paths_stay_inside_their_root(tmp_path, fragment, field, root):
    error = load_with(tmp_path, fragment)
    message = next(str(e) for e in error.errors if f"{field}: path leads outside" in str(e))
    assert "extra.yaml:2:" in message and f"path leads outside {root}" in message
    assert "defaults.allowed_roots" in message


def test_allowed_roots_admit_a_path_outside_and_a_symlink_cannot_sneak_out(tmp_path):
    outside = tmp_path / "shared"
    outside.mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "link").symlink_to(outside)
    write_config(
        tmp_path, {"base.yaml": BASE_CONFIG, "extra.yaml": "managed_folders:\n  linked: {path: link}\n"}
    )
    with pytest.raises(ConfigError, match="managed_folders.linked.path: path leads outside data_dir through"):
        load_catalog(tmp_path).folder_path("linked")  # checked when a task uses the folder
    write_config(
        tmp_path,
        {
            "base.yaml": BASE_CONFIG.replace(
                "data_dir: data", f"data_dir: data\n      allowed_roots: [{outside}]"
            ),
            "extra.yaml": f"managed_folders:\n  linked: {{path: link}}\n  direct: {{path: {outside}/x}}\n",
        },
    )
    catalog = load_catalog(tmp_path)
    assert catalog.folder_path("direct") == outside / "x"
    assert catalog.folder_path("linked") == outside, "resolve_path follows the link"


def test_an_unmanaged_env_built_for_a_config_is_refused(tmp_path):
    error = load_with(
        tmp_path,
        "code_envs:\n  ext:\n    managed: false\n    external_path: /opt/x\n    build_for: [docker-small]\n",
    )
    message = str(error)
    assert "extra.yaml:2: code_envs.ext.build_for: an unmanaged env (managed: false) gets no image" in message


def test_a_project_whose_own_default_config_it_may_not_use_is_refused(tmp_path):
    error = load_with(
        tmp_path, "projects:\n  p2:\n    root: project\n    default_execution_config: docker-restricted\n"
    )
    message = str(error)
    assert "extra.yaml:2: projects.p2.default_execution_config:" in message
    assert "may not use execution config 'docker-restricted'" in message and "ml-team" in message


def test_an_empty_yaml_file_is_a_warning(tmp_path, caplog):
    write_config(tmp_path, {"base.yaml": BASE_CONFIG, "empty.yaml": "# nothing yet\n"})
    catalog = load_catalog(tmp_path)
    assert len(catalog.warnings) == 1 and "empty.yaml: the file is empty" in catalog.warnings[0]
    assert "empty.yaml: the file is empty" in caplog.text


def test_cuda_base_images_are_layered_on_an_image_and_name_real_libraries():
    from dss_airflow.config.models import BaseImage
    from dss_airflow.images.cuda import cuda_requirements

    with pytest.raises(ValueError, match="cuda is layered on an image: give 'from'"):
        BaseImage(image="x", bootstrap={"suite": "bookworm"}, cuda="12")
    with pytest.raises(ValueError, match="cuda_libraries needs cuda"):
        BaseImage(image="x", from_image="y", cuda_libraries=["cublas"])
    base = BaseImage.model_validate({"image": "x", "from": "y", "cuda": "12", "cuda_libraries": ["cublas"]})
    assert cuda_requirements(base) == ["nvidia-cuda-runtime-cu12", "nvidia-cublas-cu12"]
