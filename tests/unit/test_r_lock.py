"""R locks as data: what a resolution's output becomes, where it is stored, when it is resolved again."""

from __future__ import annotations

import pytest

from dss_airflow.errors import LockError
from dss_airflow.images.rlock import lock_key, parse_resolution, r_names, resolve_r_lock, resolve_script

APT_OUTPUT = """\
Hit:1 http://deb.debian.org/debian bookworm InRelease
dss-lock: installed ii  r-cran-jsonlite=1.8.4+dfsg-1
dss-lock: Inst libgomp1 (12.2.0-14+deb12u1 Debian:12.15/oldstable [amd64])
dss-lock: Inst r-cran-data.table (1.14.6+dfsg-1 Debian:12.15/oldstable [amd64])
dss-lock: Inst r-base-core [4.2.2.20221110-2] (4.2.2.20221110-2+b1 Debian:12.15/oldstable [amd64])
"""


def test_an_apt_resolution_pins_the_r_packages_it_pulls_in_and_the_installed_ones():
    text = parse_resolution(APT_OUTPUT, ["data.table", "jsonlite"], cran=False)
    assert text == (
        "r-base-core=4.2.2.20221110-2+b1\n"  # an upgrade apt would make is pinned at the new version
        "r-cran-data.table=1.14.6+dfsg-1\n"
        "r-cran-jsonlite=1.8.4+dfsg-1\n"  # already in the base image: its installed version
    )
    assert "libgomp1" not in text, "system libraries come from the distribution, like the base's"


def test_a_name_the_distribution_lacks_fails_the_lock_naming_it():
    output = "dss-lock: missing r-cran-notapackage\ndss-lock: installed ii  r-cran-jsonlite=1.8.4+dfsg-1\n"
    with pytest.raises(
        LockError, match=r"R packages not in the distribution: notapackage \(r-cran-notapackage\)"
    ):
        parse_resolution(output, ["jsonlite", "notapackage"], cran=False)


def test_a_cran_resolution_keeps_its_install_order_and_names_a_missing_dependency():
    output = "dss-lock: dsstoyb==0.1.0\nchatter\ndss-lock: jsonlite==1.8.4\ndss-lock: dsstoya==1.0.0\n"
    assert parse_resolution(output, ["dsstoya", "jsonlite"], cran=True) == (
        "dsstoyb==0.1.0\njsonlite==1.8.4\ndsstoya==1.0.0\n"
    )
    with pytest.raises(LockError, match="R packages not on the CRAN mirror: gone needed by dsstoya"):
        parse_resolution("dss-lock: missing gone needed by dsstoya\n", ["dsstoya"], cran=True)


def test_the_lock_key_covers_names_base_and_source():
    key = lock_key(["jsonlite"], base_digest="sha256:a", cran_url=None)
    assert key.startswith("r:") and len(key) <= 128, "the ledger's key column"
    assert key == lock_key(["jsonlite"], base_digest="sha256:a", cran_url=None)
    others = [
        lock_key(["jsonlite", "x"], base_digest="sha256:a", cran_url=None),
        lock_key(["jsonlite"], base_digest="sha256:b", cran_url=None),
        lock_key(["jsonlite"], base_digest="sha256:a", cran_url="https://cran.example"),
    ]
    assert len({key, *others}) == 4
    assert r_names(["zoo", "data.table"]) == ["data.table", "jsonlite", "zoo"], "the runtime's jsonlite too"


class Store:
    def __init__(self) -> None:
        self.locks: dict[str, str] = {}

    def lock_text(self, spec_hash: str) -> str | None:
        return self.locks.get(spec_hash)

    def store_lock(self, spec_hash: str, text: str) -> None:
        self.locks[spec_hash] = text


def test_a_lock_is_resolved_once_per_inputs_and_again_on_refresh():
    store, scripts = Store(), []

    def run(script: str) -> tuple[int, str]:
        scripts.append(script)
        return 0, APT_OUTPUT

    def resolve(refresh: bool = False) -> str:
        return resolve_r_lock(
            ["data.table"], base_digest="sha256:a", cran_url=None, store=store, run=run, refresh=refresh
        )

    first = resolve()
    assert resolve() == first and len(scripts) == 1, "stored: every config and host reuses it"
    assert "apt-get install -s -qq --no-install-recommends r-cran-data.table r-cran-jsonlite" in scripts[0]
    resolve(refresh=True)
    assert len(scripts) == 2
    with pytest.raises(LockError, match="exit code 100"):
        resolve_r_lock(
            ["zoo"], base_digest="sha256:a", cran_url=None, store=store, run=lambda s: (100, "E: no network")
        )
    assert "available.packages(repos = repo)" in resolve_script(["zoo"], "https://cran.example")
