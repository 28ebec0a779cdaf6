"""The API a recipe sees: ``import dss_recipe``. Standard library only, so it works in any code env.

import dss_recipe
orders = dss_recipe.input_path("orders")          # file or directory of an input
out = dss_recipe.output_dir("curated")             # write files here; they appear atomically on success
limit = dss_recipe.params().get("limit", 10)
dss_recipe.set_result({"rows": 42})                # returned to Airflow (XCom); JSON only
db = dss_recipe.connection("warehouse")            # an Airflow connection the operator declared:
                                                   # db.host, db.login, db.password, db.schema, db.port,
                                                   # db.extra (dict), db.conn_type
token = dss_recipe.variable("api_token")           # an Airflow variable the operator declared
spark = dss_recipe.spark()                         # DSSSparkOperator jobs: the SparkSession of the config

In a recipe run this is ``dss_runtime.dss_recipe`` (runner.py makes ``import dss_recipe`` give it); a
notebook's kernel imports the file as a top-level module, so it imports nothing of the runtime.
"""

import atexit
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple


def _context() -> Dict[str, Any]:
    path = os.environ.get("DSS_CONTEXT")
    if not path:
        raise RuntimeError("dss_recipe is only available inside a recipe run by dss_airflow")
    with open(path, encoding="utf-8") as handle:
        data: Dict[str, Any] = json.load(handle)
        return data


def _named(kind: str, name: str) -> Path:
    items = _context()[kind]
    if name not in items:
        known = ", ".join(sorted(items)) or "none"
        raise KeyError("no %s named %r in this recipe (declared: %s)" % (kind[:-1], name, known))
    return Path(items[name])


def input_path(name: str) -> Path:
    """Path of a declared input: a managed folder, or a file or sub-directory inside one (read-only)."""
    return _named("inputs", name)


def output_dir(name: str) -> Path:
    """Directory to write a declared output into; its files reach the managed folder only on success."""
    return _named("outputs", name)


def params() -> Dict[str, Any]:
    """The recipe parameters given to the operator (recipe_params)."""
    return dict(_context().get("params", {}))


def set_result(value: Any) -> None:
    """Return a JSON-serialisable value to Airflow: it becomes the task's XCom under 'result'."""
    context = _context()
    path = os.path.join(os.path.dirname(context["result_file"]), "user_result.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle)


class Connection(Dict[str, Any]):
    """An Airflow connection the task declared: ``conn.password`` or ``conn["password"]`` (host, login,
    password, schema, port, extra, conn_type). Printing it shows neither the password nor the extras'
    values."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        shown = ", ".join(
            "%s=%r" % (key, "***" if key == "password" and value else value)
            for key, value in sorted(self.items())
            if key != "extra"
        )
        return "Connection(%s, extra keys=%s)" % (shown, sorted(self.get("extra") or {}))

    __str__ = __repr__


_SECRETS: Optional[Dict[str, Any]] = None


def _declared_secret(kind: str, name: str) -> Any:
    """A value of the task's secrets file (written by the backend, readable by this user only)."""
    global _SECRETS
    if _SECRETS is None:
        path = _context().get("secrets_file")
        _SECRETS = {"connections": {}, "variables": {}}
        if path:
            with open(path, encoding="utf-8") as handle:
                _SECRETS = json.load(handle)
    items = _SECRETS.get(kind, {})
    if name not in items:
        known = ", ".join(sorted(items)) or "none"
        raise KeyError(
            "no %s named %r declared by this task (declared: %s): add it to the operator's %s=[...]"
            % (kind[:-1], name, known, kind)
        )
    return items[name]


def connection(name: str) -> Connection:
    """The Airflow connection ``name``, declared by the operator's ``connections=[...]``."""
    return Connection(_declared_secret("connections", name))


def variable(name: str) -> str:
    """The Airflow variable ``name``, declared by the operator's ``variables=[...]``."""
    return str(_declared_secret("variables", name))


_SPARK_SESSION: Any = None


def _session_options(settings: Dict[str, Any], scratch: str) -> Tuple[Optional[str], Dict[str, Any]]:
    """(master, conf) of the SparkSession for the ``DSS_SPARK`` settings.

    No master (or null) is cluster mode: spark-submit or the spark-operator already set it, and the
    driver's scratch space is theirs. With a master (local mode), Spark's scratch files and warehouse go
    to ``scratch``, in the run's private directory (removed after the run), not the working directory.
    """
    master = settings.get("master")
    conf: Dict[str, Any] = dict(settings.get("conf", {}))
    if master is None:
        return None, conf
    defaults = {
        "spark.local.dir": os.path.join(scratch, "local"),
        "spark.sql.warehouse.dir": os.path.join(scratch, "warehouse"),
    }
    return str(master), dict(defaults, **conf)


def spark() -> Any:
    """The SparkSession of a DSSSparkOperator job, built once from its spark config (master, conf).

    pyspark is imported here, so recipes that never call this do not need it.
    """
    global _SPARK_SESSION
    if _SPARK_SESSION is not None:
        return _SPARK_SESSION
    settings_json = os.environ.get("DSS_SPARK")
    if not settings_json:
        raise RuntimeError(
            "dss_recipe.spark() is only available in a job run by DSSSparkOperator (no spark config given)"
        )
    settings = json.loads(settings_json)
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        env = os.environ.get("DSS_CODE_ENV", "?")
        raise RuntimeError(
            "pyspark is not installed in code env %r: add it to the env's packages, e.g. "
            "'pyspark==4.0.1'" % env
        ) from exc
    scratch = os.path.join(os.path.dirname(_context()["result_file"]), "spark")
    master, conf = _session_options(settings, scratch)
    builder = SparkSession.builder
    if master is not None:
        builder = builder.master(master)
    builder = builder.appName(settings.get("app_name", "dss"))
    for key, value in conf.items():
        builder = builder.config(key, value)
    _SPARK_SESSION = builder.getOrCreate()
    atexit.register(_SPARK_SESSION.stop)
    return _SPARK_SESSION
