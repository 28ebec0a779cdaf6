"""Pure parts of code-env images: identity, install script, commit, base Dockerfile, ledger transitions
(the ledger's storage is tested in test_ledger.py)."""

from __future__ import annotations

import pytest

from dss_airflow.images.dockerfile import base_dockerfile
from dss_airflow.images.envbuild import commit_changes, install_script
from dss_airflow.images.identity import BuildInputs, image_tag, spec_hash, tree_digest
from dss_airflow.images.ledger import ImageRecord, PairState, switch_current


def test_spec_hash_ignores_order_and_duplicates_but_not_content():
    assert spec_hash("3.11", ["a==1", "b==2"]) == spec_hash("3.11", ["b==2", "a==1", "a==1"])
    assert spec_hash("3.11", ["a==1"]) != spec_hash("3.12", ["a==1"])
    assert spec_hash("3.11", ["a==1"]) != spec_hash("3.11", ["a==2"])


def test_build_hash_covers_every_input_and_names_the_change():
    base = BuildInputs(base_digest="sha256:aaa", lock_sha256="l1")
    assert base.build_hash() == BuildInputs(base_digest="sha256:aaa", lock_sha256="l1").build_hash()
    variants = {
        "base image changed": BuildInputs(base_digest="sha256:bbb", lock_sha256="l1"),
        "resolved packages changed": BuildInputs(base_digest="sha256:aaa", lock_sha256="l2"),
        "R packages changed": BuildInputs(base_digest="sha256:aaa", lock_sha256="l1", r_packages=("dplyr",)),
        "resources changed": BuildInputs(
            base_digest="sha256:aaa", lock_sha256="l1", resources_mode="copy", resources_digest="x"
        ),
        "build template changed": BuildInputs(
            base_digest="sha256:aaa", lock_sha256="l1", template_version=99
        ),
        "resolved R packages changed": BuildInputs(
            base_digest="sha256:aaa", lock_sha256="l1", r_lock_sha256="r1"
        ),
    }
    hashes = {base.build_hash()}
    for reason, changed in variants.items():
        assert changed.changes_from(base) == [reason]
        hashes.add(changed.build_hash())
    assert len(hashes) == len(variants) + 1
    assert base.changes_from(None) == ["never built"]
    assert image_tag("pandas", base.build_hash()) == f"dss-code-envs:pandas-{base.build_hash()[:12]}"


def test_tree_digest_sees_content_renames_and_modes(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    first = tree_digest(tmp_path)
    (tmp_path / "a.txt").rename(tmp_path / "b.txt")
    renamed = tree_digest(tmp_path)
    (tmp_path / "b.txt").chmod(0o755)
    executable = tree_digest(tmp_path)
    (tmp_path / "b.txt").write_text("y")
    assert len({first, renamed, executable, tree_digest(tmp_path)}) == 4


def test_install_script_quotes_and_orders_steps():
    script = install_script(base_python="/usr/bin/python3", index_url="https://pypi.internal/simple x")
    lines = script.splitlines()
    assert lines[0] == "set -eu"
    assert "venv --seed --python /usr/bin/python3 /opt/dss/env" in script
    assert (
        "pip install --python /opt/dss/env/bin/python --no-deps -r /opt/dss-build/ctx/requirements.lock"
        in script
    )
    assert "--index-url 'https://pypi.internal/simple x'" in script, "values are shell-quoted"
    assert "resources" not in script
    assert (
        "mkdir -p /opt/dss-airflow/runtime && tar -C /opt/dss-build/runtime --exclude=__pycache__ -cf - ."
        " | tar -C /opt/dss-airflow/runtime -xf -" in script
    )
    copy = install_script(base_python="/usr/bin/python3", resources_mode="copy")
    assert "cp -a /opt/dss-build/ctx/resources /opt/dss/resources" in copy
    init = install_script(
        base_python="/usr/bin/python3", resources_mode="init_script", init_script_name="init.py"
    )
    assert "cd /opt/dss/resources && DSS_RESOURCES_DIR=/opt/dss/resources /opt/dss/env/bin/python" in init
    from dss_airflow.images.rlock import r_names

    with pytest.raises(ValueError, match="invalid R package names: bad;rm"):
        r_names(["dplyr", "bad;rm"])


def test_commit_restores_the_non_root_user_and_labels():
    changes = commit_changes(
        env_name="pandas", labels={"dss_airflow.build_hash": "abc"}, user="1000:1000", workdir="/home/dss",
        with_resources=True,
    )  # fmt: skip
    assert "USER 1000:1000" in changes and "WORKDIR /home/dss" in changes
    assert 'LABEL dss_airflow.build_hash="abc"' in changes
    assert "ENV DSS_RESOURCES_DIR=/opt/dss/resources" in changes
    assert changes[0].startswith("ENV PATH=/opt/dss/env/bin:")


def test_base_dockerfile_from_upstream():
    text = base_dockerfile(
        from_image="python:3.11-slim", system_packages=["git", "curl"], prepend="ARG X=1", append="ENV Y=2",
        with_ca_bundle=True,
    )  # fmt: skip
    lines = text.splitlines()
    assert lines[0] == "FROM python:3.11-slim"
    assert lines.index("ARG X=1") < lines.index("ENV Y=2"), "prepend right after FROM, append at the end"
    assert "apt-get install -y --no-install-recommends curl git" in text
    assert "COPY ca-bundle.crt /usr/local/share/ca-certificates/dss-extra-ca.crt" in text
    assert lines[-2:] == ["USER 1000:1000", "WORKDIR /home/dss"]


def record(build_hash: str) -> ImageRecord:
    return ImageRecord(
        image=f"sha256:{build_hash}", tag=f"dss-code-envs:e-{build_hash}", build_hash=build_hash,
        spec_hash="s", lock_sha256="l", base_digest="b",
    )  # fmt: skip


def test_switch_keeps_n_previous_and_returns_the_dropped():
    state = PairState()
    dropped = []
    for build_hash in ("h1", "h2", "h3", "h4", "h5"):
        dropped += switch_current(state, record(build_hash), keep=3)
    assert state.current is not None and state.current.build_hash == "h5"
    assert [r.build_hash for r in state.previous] == ["h4", "h3", "h2"]
    assert [r.build_hash for r in dropped] == ["h1"]
    switch_current(state, record("h5"), keep=3)
    assert [r.build_hash for r in state.previous] == ["h4", "h3", "h2"], "re-switching to current is a no-op"


def test_update_script_removes_then_installs_the_lock():
    from dss_airflow.images.envbuild import update_script

    script = update_script(removed=["six", "old-lib"])
    assert "venv" not in script, "the env exists in the previous image"
    uninstall = "/opt/dss-build/uv pip uninstall --python /opt/dss/env/bin/python old-lib six"
    install = "/opt/dss-build/uv pip install --python /opt/dss/env/bin/python --no-deps"
    assert script.index(uninstall) < script.index(install)
    assert "UV_COMPILE_BYTECODE=1" in script
    assert "uninstall" not in update_script(removed=[])


def test_lock_pins_are_compared_by_canonical_name():
    from dss_airflow.images.plan import _pins

    assert _pins("Foo_Bar==1.0\nsix==1.16.0\n# comment\n") == {"foo-bar": "1.0", "six": "1.16.0"}


def test_the_r_lock_is_installed_exactly_from_the_distribution_or_the_cran_mirror():
    from dss_airflow.images.envbuild import R_LOCK_FILE, R_PACKAGES_FILE, r_install_lines

    apt = "\n".join(r_install_lines(["data.table", "jsonlite"], None))
    assert (
        "apt-get install -y -qq --no-install-recommends $(cat /opt/dss-build/ctx/r-packages.lock)" in apt
    ), "the lock's NAME=VERSION lines are apt's pins"
    assert "images build --refresh" in apt and "exit 3" in apt, "a pin the mirror lost says how to re-resolve"
    assert f"cp /opt/dss-build/ctx/r-packages.lock {R_LOCK_FILE}" in apt
    assert f"data.table jsonlite > {R_PACKAGES_FILE}" in apt and "install.packages" not in apt
    cran = "\n".join(
        r_install_lines(["data.table", "jsonlite"], "https://packagemanager.posit.co/cran/latest")
    )
    assert 'repo <- "https://packagemanager.posit.co/cran/latest"' in cran and "apt-get" not in cran
    assert "src/contrib/Archive/%s/%s_%s.tar.gz" in cran, "a version the mirror moved on from is archived"
    assert 'readLines("/opt/dss-build/ctx/r-packages.lock")' in cran and "packageVersion" in cran
