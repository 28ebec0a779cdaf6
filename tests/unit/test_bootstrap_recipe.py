"""Pure tests of the base image recipe's cache key and of the apt mirror discovery (no Docker, no root)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from dss_airflow.errors import DSSAirflowError
from dss_airflow.images.bootstrap import BootstrapRecipe, debian_mirror, default_base_tag

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    path = tmp_path / "ca.crt"
    path.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    return path


def test_content_hash_is_stable_for_equal_recipes(ca: Path) -> None:
    first = BootstrapRecipe(ca_bundle=ca).content_hash()
    assert first == BootstrapRecipe(ca_bundle=ca).content_hash()
    assert len(first) == 64
    assert int(first, 16) >= 0


def test_content_hash_ignores_package_order_and_ca_path(ca: Path, tmp_path: Path) -> None:
    recipe = BootstrapRecipe(ca_bundle=ca)
    copy = tmp_path / "elsewhere" / "bundle.pem"
    copy.parent.mkdir()
    copy.write_bytes(ca.read_bytes())
    assert replace(recipe, ca_bundle=copy).content_hash() == recipe.content_hash()
    reordered = replace(recipe, packages=tuple(reversed(recipe.packages)))
    assert reordered.content_hash() == recipe.content_hash()


@pytest.mark.parametrize(
    "change",
    [
        {"packages": ("python3", "python3-venv", "ca-certificates", "git")},
        {"uid": 1001},
        {"user": "other"},
        {"suite": "trixie"},
        {"ca_bundle": None},
    ],
    ids=["packages", "uid", "user", "suite", "no-ca"],
)
def test_content_hash_changes_with_the_recipe(ca: Path, change: dict[str, object]) -> None:
    recipe = BootstrapRecipe(ca_bundle=ca)
    assert replace(recipe, **change).content_hash() != recipe.content_hash()  # type: ignore[arg-type]


def test_content_hash_follows_ca_content_not_path(ca: Path) -> None:
    before = BootstrapRecipe(ca_bundle=ca).content_hash()
    ca.write_text(ca.read_text() + "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n")
    assert BootstrapRecipe(ca_bundle=ca).content_hash() != before


def test_missing_ca_bundle_hashes_like_none(tmp_path: Path) -> None:
    missing = BootstrapRecipe(ca_bundle=tmp_path / "absent.crt")
    assert missing.content_hash() == BootstrapRecipe(ca_bundle=None).content_hash()


@pytest.mark.parametrize(
    "change",
    [{"uid": 0}, {"user": "Bad User"}, {"packages": ()}, {"packages": ("python3,evil",)}, {"suite": "--x"}],
)
def test_invalid_recipes_are_rejected_early(change: dict[str, object]) -> None:
    with pytest.raises(DSSAirflowError):
        BootstrapRecipe(**change)  # type: ignore[arg-type]


def test_default_tag() -> None:
    assert default_base_tag() == "dss-airflow-base:bookworm-py311"


def _apt_dir(tmp_path: Path) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    return tmp_path


def test_mirror_from_deb822_skips_security_and_disabled(tmp_path: Path) -> None:
    apt = _apt_dir(tmp_path)
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n"
        "# http://snapshot.debian.org/archive/debian-security/20250520T000000Z\n"
        "URIs: http://deb.debian.org/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb-src\n"
        "URIs: http://src.example.org/debian\n"
        "Suites: bookworm\n"
        "\n"
        "Types: deb\n"
        "URIs: http://disabled.example.org/debian\n"
        "Suites: bookworm\n"
        "Enabled: no\n"
        "\n"
        "Types: deb\n"
        "URIs: cdrom:/media/ http://mirror.example.org/debian/\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    assert debian_mirror(apt) == "http://mirror.example.org/debian"


def test_mirror_from_classic_sources_list(tmp_path: Path) -> None:
    apt = _apt_dir(tmp_path)
    (apt / "sources.list").write_text(
        "# deb http://commented.example.org/debian bookworm main\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n"
        "deb-src http://src.example.org/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://mirror.example.org/debian bookworm main"
        "\n"
    )
    assert debian_mirror(apt) == "https://mirror.example.org/debian"


def test_classic_sources_list_is_read_before_sources_list_d(tmp_path: Path) -> None:
    apt = _apt_dir(tmp_path)
    (apt / "sources.list").write_text("deb http://first.example.org/debian bookworm main\n")
    (apt / "sources.list.d" / "a.sources").write_text(
        "Types: deb\nURIs: http://second.example.org/debian\nSuites: bookworm\n"
    )
    assert debian_mirror(apt) == "http://first.example.org/debian"


def test_no_mirror_raises_a_clear_runtime_error(tmp_path: Path) -> None:
    apt = _apt_dir(tmp_path)
    (apt / "sources.list.d" / "security.list").write_text(
        "deb http://deb.debian.org/debian-security bookworm-security main\n"
    )
    with pytest.raises(RuntimeError, match=r"no http\(s\) Debian mirror") as info:
        debian_mirror(apt)
    assert "security.list" in str(info.value)
    assert isinstance(info.value, DSSAirflowError)


def test_no_sources_at_all(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="do not exist"):
        debian_mirror(tmp_path / "nothing")
