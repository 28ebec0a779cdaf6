"""Pure Dockerfile text of a base image built from an upstream image (``from:`` in base_images).

DSS's build-base-image options map onto it: system packages, Dockerfile fragments right after FROM and
at the end, an extra CA bundle (corporate TLS proxy), and a baked-in non-root user.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

CA_IN_IMAGE = "/usr/local/share/ca-certificates/dss-extra-ca.crt"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def base_dockerfile(
    *,
    from_image: str,
    system_packages: Sequence[str] = (),
    prepend: str | None = None,
    append: str | None = None,
    with_ca_bundle: bool = False,
    extra: Sequence[str] = (),
    labels: dict[str, str] | None = None,
    uid: int = 1000,
    user: str = "dss",
) -> str:
    """Dockerfile text; ``ca-bundle.crt`` is expected in the build context when ``with_ca_bundle``."""
    lines = [f"FROM {from_image}", "USER root"]
    if prepend:
        lines += ["# --- dockerfile_prepend", prepend.rstrip(), "# ---"]
    if with_ca_bundle:
        lines += [
            f"COPY ca-bundle.crt {CA_IN_IMAGE}",
            f"RUN cp {CA_IN_IMAGE} {CA_BUNDLE}",
            f"ENV SSL_CERT_FILE={CA_BUNDLE} REQUESTS_CA_BUNDLE={CA_BUNDLE} PIP_CERT={CA_BUNDLE}",
        ]
    if system_packages:
        packages = " ".join(shlex.quote(p) for p in sorted(set(system_packages)))
        lines.append(
            "RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            f"{packages} && rm -rf /var/lib/apt/lists/*"
        )
    lines += extra
    lines.append(
        f"RUN id -u {uid} >/dev/null 2>&1 || useradd --uid {uid} --create-home --shell /bin/bash {user}"
    )
    if append:
        lines += ["# --- dockerfile_append", append.rstrip(), "# ---"]
    if labels:
        lines.append("LABEL " + " ".join(f'{k}="{v}"' for k, v in sorted(labels.items())))
    lines += [f"USER {uid}:{uid}", f"WORKDIR /home/{user}"]
    return "\n".join(lines) + "\n"
