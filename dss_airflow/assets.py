"""The ``dss-code-env://<env>`` asset: "the image of this code env changed".

Each successful rebuild emits an event for it, so a DAG can be scheduled on its env's new image:
``schedule=[code_env_asset("pandas")]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dss_airflow.config.models import NAME_PATTERN

if TYPE_CHECKING:
    from urllib.parse import SplitResult

    from airflow.sdk import Asset

SCHEME = "dss-code-env"
#: The alias the rebuild operator attaches its per-env events to (only rebuilt envs get one).
REBUILD_ALIAS = "dss-code-env-rebuilds"


def code_env_uri(env: str) -> str:
    return f"{SCHEME}://{env}"


def code_env_asset(env: str) -> Asset:
    from airflow.sdk import Asset

    return Asset(name=f"dss_code_env_{env}", uri=code_env_uri(env), group="dss-code-env")


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Airflow's URI handler for the scheme (provider ``asset-uris``): the host is a code env name."""
    if not NAME_PATTERN.match(uri.netloc) or uri.path not in ("", "/"):
        raise ValueError(f"{SCHEME}:// URIs name one code env, e.g. {SCHEME}://pandas (got {uri.geturl()!r})")
    return uri
