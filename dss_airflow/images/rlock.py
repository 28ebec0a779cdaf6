"""R package locks: the exact versions of a code env's R packages, resolved once, installed pinned.

Like Python locks, an R lock is resolved once per input and stored in the ledger, so every config, host and
rebuild installs the same versions, and a re-resolution (``images build --refresh``) that finds new
versions changes the build hash: drift is a rebuild with a reason, never silent. The inputs are the
package names, the base image's digest (what is installed already, and its apt sources) and the source:

* the distribution (no ``cran_url``): ``apt-get install --simulate`` in a container of the base image names
  every ``r-*`` package the names pull in (``r-cran-data.table=1.14.6+dfsg-1``); the build installs exactly
  those with ``apt-get install NAME=VERSION``. System libraries come from the distribution at build time,
  like the base image's own packages.
* a CRAN or Posit mirror (``cran_url``): ``available.packages()`` and the packages' Depends/Imports/
  LinkingTo closure (``data.table==1.15.4``), in install order; the build downloads each exact version,
  current or from the mirror's ``Archive/``, and checks what got installed.

A package already installed in the base image is locked at its installed version (the base digest is in
the key). A name the source does not have fails the lock with that name, before any builder starts.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from typing import TYPE_CHECKING

from dss_airflow.errors import LockError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from dss_airflow.images.identity import LockStore

#: Bump when the resolution scripts change what a lock contains: every R lock is resolved again.
R_LOCK_VERSION = 1
#: Lines of the resolution's output that carry its answer (the rest is apt's or R's chatter).
_MARK = "dss-lock:"
#: The R package dss_recipe.R needs (set_result, params): in every R lock.
RUNTIME_R_PACKAGES = ("jsonlite",)
_R_PACKAGE = re.compile(r"^[A-Za-z][A-Za-z0-9.]*$")
_INST = re.compile(r"^Inst (\S+)(?: \[[^\]]*\])? \((\S+) ")
#: Debian's R packages: CRAN's (r-cran-*), Bioconductor's and R itself; what an apt R lock pins.
_R_DEB = re.compile(r"^r-(cran|bioc|base|recommended|other)")


def r_names(r_packages: Sequence[str]) -> list[str]:
    """The R packages an env installs: its own and the runtime's, sorted case-insensitively."""
    bad = [p for p in r_packages if not _R_PACKAGE.match(p)]
    if bad:
        raise ValueError(f"invalid R package names: {', '.join(bad)}")
    return sorted({*RUNTIME_R_PACKAGES, *r_packages}, key=str.lower)


def deb_name(r_package: str) -> str:
    """Debian's package for a CRAN package: ``data.table`` → ``r-cran-data.table``."""
    return f"r-cran-{r_package.lower()}"


def lock_key(names: Sequence[str], *, base_digest: str, cran_url: str | None) -> str:
    """Where the lock of these inputs is stored (beside Python locks, in their own name space)."""
    payload = {"r": sorted(names), "base": base_digest, "cran_url": cran_url, "version": R_LOCK_VERSION}
    return "r:" + hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def resolve_script(names: Sequence[str], cran_url: str | None) -> str:
    """What a root container of the base image runs to resolve ``names`` (it needs the network)."""
    if cran_url:
        return f"Rscript -e {shlex.quote(_cran_resolution(names, cran_url))}"
    debs = " ".join(deb_name(name) for name in names)
    return "\n".join(
        [
            "set -eu",
            "apt-get update -qq >&2",
            f"for deb in {debs}; do",
            f'  apt-cache show "$deb" >/dev/null 2>&1 || echo "{_MARK} missing $deb"',
            "done",
            # Installed already (the base image's r: true): locked at the installed version.
            f"dpkg-query -W -f='{_MARK} installed ${{db:Status-Abbrev}} ${{Package}}=${{Version}}\\n' {debs}"
            " 2>/dev/null || true",
            f'apt-get install -s -qq --no-install-recommends {debs} | sed -n "s/^Inst /{_MARK} Inst /p"',
        ]
    )


def _r_vector(names: Sequence[str]) -> str:
    return "c(" + ", ".join(f'"{name}"' for name in names) + ")"


def _cran_resolution(names: Sequence[str], cran_url: str) -> str:
    """R: the closure of ``names`` on the mirror, dependencies first; installed packages as they are."""
    return f"""
repo <- "{cran_url}"; wanted <- {_r_vector(names)}
ap <- available.packages(repos = repo)
ip <- installed.packages()
have <- ip[!duplicated(rownames(ip)), "Version"]
base <- rownames(installed.packages(priority = "base"))
missing <- setdiff(wanted, c(rownames(ap), names(have)))
if (length(missing)) {{ writeLines(paste("{_MARK} missing", missing)); quit(status = 3) }}
order <- character()
visit <- function(p, by) {{
  if (p %in% order || p %in% base || p == "R") return(invisible())
  if (!(p %in% names(have))) {{
    if (!(p %in% rownames(ap))) {{
      writeLines(paste("{_MARK} missing", p, "needed by", by)); quit(status = 3)
    }}
    deps <- tools::package_dependencies(p, db = ap, which = c("Depends", "Imports", "LinkingTo"))[[1]]
    for (d in sort(deps)) visit(d, p)
  }}
  order <<- c(order, p)
}}
for (p in sort(wanted)) visit(p, "the code env")
for (p in order) {{
  writeLines(sprintf("{_MARK} %s==%s", p, if (p %in% names(have)) have[[p]] else ap[p, "Version"]))
}}
"""


def parse_resolution(output: str, names: Sequence[str], *, cran: bool) -> str:
    """The lock text from a resolution's output; a name the source lacks is a :class:`LockError`."""
    answers = [line[len(_MARK) :].strip() for line in output.splitlines() if line.startswith(_MARK)]
    missing = [answer.split(" ", 1)[1] for answer in answers if answer.startswith("missing ")]
    if not cran:
        debs = {deb_name(name): name for name in names}
        missing = [f"{debs.get(deb, deb)} ({deb})" for deb in missing]
    if missing:
        where = "on the CRAN mirror" if cran else "in the distribution"
        fix = (
            "check the names (CRAN's spelling, e.g. data.table)"
            if cran
            else "check the names, or set cran_url on the base image to install from a CRAN mirror"
        )
        raise LockError(f"R packages not {where}: {', '.join(missing)}; {fix}")
    if cran:
        return "".join(f"{answer}\n" for answer in answers)
    pins: dict[str, str] = {}
    for answer in answers:
        if answer.startswith("installed "):
            status, pin = answer.split()[1], answer.split()[-1]
            if status.startswith("ii"):
                pins.setdefault(pin.partition("=")[0], pin)
        elif match := _INST.match(answer):
            pins[match[1]] = f"{match[1]}={match[2]}"  # an upgrade wins over the installed version
    wanted = {deb_name(name) for name in names}
    absent = sorted(wanted - set(pins))
    if absent:
        raise LockError(f"the R lock did not resolve {', '.join(absent)}:\n{output[-2000:]}")
    return "".join(f"{pins[name]}\n" for name in sorted(pins) if _R_DEB.match(name))


def resolve_r_lock(
    r_packages: Sequence[str],
    *,
    base_digest: str,
    cran_url: str | None,
    store: LockStore,
    run: Callable[[str], tuple[int, str]],
    refresh: bool = False,
) -> str:
    """The R lock of an env's packages on a base image: stored, or resolved by ``run`` (a root container of
    the base image running a shell script, returning its exit code and output) and stored."""
    names = r_names(r_packages)
    key = lock_key(names, base_digest=base_digest, cran_url=cran_url)
    known = None if refresh else store.lock_text(key)
    if known is not None:
        return known
    code, output = run(resolve_script(names, cran_url))
    if code != 0 and f"{_MARK} missing" not in output:  # else parse_resolution names what is missing
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise LockError(f"could not resolve the R packages ({', '.join(names)}), exit code {code}:\n{tail}")
    text = parse_resolution(output, names, cran=bool(cran_url))
    store.store_lock(key, text)
    return text
