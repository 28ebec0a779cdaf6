"""Remote Docker daemons as plain data: the shares_worker_filesystem flag, the "copy" layout, the tar
helpers that carry files in and out (and refuse what would escape), the unreachable-daemon translation."""

from __future__ import annotations

import io
import tarfile
from typing import TYPE_CHECKING

import pytest
import requests

from dss_airflow.archives import ChunkReader, extract_stream, write_copies
from dss_airflow.backends.docker import docker_operator_kwargs
from dss_airflow.config.loader import load_catalog
from dss_airflow.config.models import DockerExecutionConfig
from dss_airflow.config.resolve import resolve_execution
from dss_airflow.errors import ImageNotBuiltError, InvalidConfigError
from dss_airflow.hooks.docker import daemon_unreachable
from dss_airflow.images.lookup import image_for
from dss_airflow.spec import ImageRef, MountSpec, build_spec
from tests.helpers import BASE_CONFIG, make_project, recipe_run, write_config

if TYPE_CHECKING:
    from pathlib import Path

REMOTE = """
    execution_configs:
      remote:
        type: docker
        base_image: base
        docker_host: tcp://gpu-host:2376
"""


@pytest.fixture
def catalog(tmp_path: Path):
    write_config(tmp_path, {"c.yaml": BASE_CONFIG, "r.yaml": REMOTE})
    make_project(tmp_path, {"recipes/r.py": "pass\n"})
    return load_catalog(tmp_path)


@pytest.mark.parametrize(
    ("host", "flag", "shares"),
    [
        ("unix:///var/run/docker.sock", None, True),
        ("tcp://gpu:2376", None, False),
        ("ssh://me@gpu", None, False),
        ("tcp://nfs-sharing-host:2376", True, True),
        ("unix:///run/user/1000/docker.sock", False, False),
    ],
)
def test_only_a_local_socket_shares_the_worker_filesystem_by_default(host, flag, shares):
    config = DockerExecutionConfig(
        type="docker", base_image="b", docker_host=host, shares_worker_filesystem=flag
    )
    assert config.shares_filesystem is shares


def _problems(tmp_path: Path, extra: str) -> list[str]:
    write_config(tmp_path, {"c.yaml": BASE_CONFIG, "x.yaml": extra})
    with pytest.raises(InvalidConfigError) as info:
        load_catalog(tmp_path)
    return [str(error) for error in info.value.errors]


def test_a_flag_that_is_not_a_boolean_names_file_line_field_value_and_fix(tmp_path):
    (problem,) = _problems(tmp_path, REMOTE + "        shares_worker_filesystem: sometimes\n")
    assert problem.startswith(f"{tmp_path / 'x.yaml'}:7: execution_configs.remote.shares_worker_filesystem:")
    assert "must be true or false" in problem and "(got 'sometimes')" in problem
    assert "false for tcp://" in problem


def test_tls_on_a_unix_socket_is_refused(tmp_path):
    extra = (
        "execution_configs:\n  sock:\n    type: docker\n    base_image: base\n    tls_cert_dir: /etc/tls\n"
    )
    (problem,) = _problems(tmp_path, extra)
    assert "x.yaml:5: execution_configs.sock.tls_cert_dir: TLS only applies to tcp:// hosts" in problem


def test_copy_layout_mounts_nothing_and_copies_what_mounts_would_show(catalog, tmp_path):
    run = recipe_run(catalog, "remote", tmp_path)
    mounted = build_spec(run, layout="container", image=ImageRef("img"))
    copied = build_spec(run, layout="copy", image=ImageRef("img"))
    assert copied.mounts == () and mounted.copies == ()
    runtime = "/opt/dss-airflow/runtime"
    assert copied.copies == tuple(m for m in mounted.mounts if m.target != runtime), "the image's runtime"
    assert {m.target: m.read_only for m in copied.copies} == {
        "/dss/project": True,
        "/dss/run": False,
        "/dss/in/raw": True,
        "/dss/out/out": False,
    }
    assert copied.context == mounted.context, "the task sees the same paths"
    assert copied.host_result_file == tmp_path / "run" / "result.json", "read on the worker after copy-out"
    config = run.resolved.execution_config
    assert isinstance(config, DockerExecutionConfig)
    kwargs = docker_operator_kwargs(copied, config)
    assert kwargs["mounts"] == [] and kwargs["copies"] == copied.copies


def test_a_remote_config_needs_a_built_image_even_without_packages(catalog, tmp_path):
    resolved = resolve_execution(catalog, project="demo", execution_config="remote", code_env="plain")
    with pytest.raises(ImageNotBuiltError, match="dss-airflow images build plain --config remote"):
        image_for(catalog, resolved)
    local = resolve_execution(catalog, project="demo", execution_config="docker-small", code_env="plain")
    assert image_for(catalog, local).image == "dss-airflow-base:bookworm-py311", "the runtime is mounted"


def _chunks(data: bytes, size: int = 7) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_copies_round_trip_through_one_tar_with_parents(tmp_path):
    (tmp_path / "project" / "lib").mkdir(parents=True)
    (tmp_path / "project" / "lib" / "util.py").write_text("x = 1\n")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "context.json").write_text("{}")
    archive = io.BytesIO()
    write_copies(
        [
            MountSpec(str(tmp_path / "project"), "/dss/project"),
            MountSpec(str(tmp_path / "run"), "/dss/run", read_only=False),
        ],
        archive,
    )
    with tarfile.open(fileobj=io.BytesIO(archive.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members)[:2] == ["dss", "dss/project"], "parents first, each once"
    assert {"dss/project/lib/util.py", "dss/run/context.json"} <= set(members)
    assert all(m.uname == "" for m in members.values()), "numeric ownership only"

    # get_archive of /dss/run yields "run/..." members: the top directory is the destination.
    back = io.BytesIO()
    with tarfile.open(fileobj=back, mode="w") as tar:
        tar.add(tmp_path / "run", arcname="run")
    destination = tmp_path / "back"
    destination.mkdir()
    written = extract_stream(_chunks(back.getvalue()), destination)
    assert written == [destination.resolve() / "context.json"]
    assert (destination / "context.json").read_text() == "{}"


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for info, content in members:
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content) if content else None)
    return data.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("out/../../escape.txt"),
        _member("/etc/evil"),
        _member("out/link", tarfile.SYMTYPE, "/etc/passwd"),
        _member("out/link", tarfile.SYMTYPE, "../../etc/passwd"),
        _member("out/hard", tarfile.LNKTYPE, "../etc/passwd"),
    ],
    ids=["dotdot", "absolute", "absolute-symlink", "escaping-symlink", "escaping-hardlink"],
)
def test_extraction_refuses_what_escapes_the_destination(tmp_path, member):
    destination = tmp_path / "dest"
    destination.mkdir()
    with pytest.raises(tarfile.FilterError):
        extract_stream([_tar((member, b""))], destination)
    assert not (tmp_path / "escape.txt").exists()


def test_chunk_reader_reads_any_size():
    reader = ChunkReader(iter([b"abc", b"", b"defg"]))
    assert reader.read(2) == b"ab" and reader.read(4) == b"cdef" and reader.read() == b"g"
    assert reader.read(1) == b""


@pytest.mark.parametrize(
    ("exc", "reason", "fix"),
    [
        (
            requests.exceptions.SSLError("certificate verify failed"),
            "TLS: the daemon's certificate",
            "ca.pem",
        ),
        (requests.exceptions.SSLError("tlsv1 alert unknown ca"), "TLS handshake failed", "cert.pem/key.pem"),
        (requests.exceptions.ConnectionError("Connection refused"), "connection refused", "dockerd listens"),
        (
            requests.exceptions.ConnectionError("NameResolutionError(gpu)"),
            "host name does not resolve",
            "DNS",
        ),
        (requests.exceptions.ConnectionError("Read timed out"), "no answer within 10 s", "reach it"),
    ],
)
def test_unreachable_daemons_say_which_config_host_and_fix(exc, reason, fix):
    error = daemon_unreachable("remote", "tcp://gpu:2376", exc, tls_dir="/etc/tls")
    assert error.config == "remote" and error.host == "tcp://gpu:2376" and error.reason.startswith(reason)
    assert "execution config 'remote'" in str(error) and fix in str(error)
