"""The admin page's FastAPI app, mounted by the api-server at ``dss_airflow.ui.URL_PREFIX`` (plugin.py).

Airflow mounts plugin apps without authentication, so every route here asks Airflow's auth manager:
the user comes from the API's own dependency (the ``_token`` cookie the Airflow UI sets, or an
``Authorization: Bearer`` token), reading needs the custom view ``RESOURCE`` (any role with read access
under the simple auth manager), and an action needs what Airflow's own trigger endpoint needs:
``POST`` on the runs of that DAG. Others see the page without buttons, and their POST is refused (403).
An anonymous browser is sent to Airflow's login page; any other anonymous request gets 401.

Actions are DAG runs created through Airflow (``trigger_dag``), never work done in the api-server:
"Rebuild" runs ``dss_code_env_rebuild`` with ``{"env": ...}``, "Make active" runs ``dss_model_promote``
with ``{"model": ..., "version": ...}`` (a promotion, or a rollback to an older version).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, urlencode

from airflow.api_fastapi.app import API_ROOT_PATH, get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)

from dss_airflow.ui import overview

if TYPE_CHECKING:
    import jinja2

    from dss_airflow.config.catalog import Catalog
    from dss_airflow.images.ledger import Ledger

#: The custom view the auth manager is asked about for reading the page.
RESOURCE = "DSS admin"
#: The DAGs the page's actions run (dags/dss_code_env_rebuild.py, dags/dss_model_promote.py).
REBUILD_DAG = "dss_code_env_rebuild"
PROMOTE_DAG = "dss_model_promote"
ACTION_DAGS = (REBUILD_DAG, PROMOTE_DAG)


def reader(user: GetUserDep) -> BaseUser:
    """The signed-in user, if the auth manager lets them read the page (403 otherwise)."""
    if not get_auth_manager().is_authorized_custom_view(method="GET", resource_name=RESOURCE, user=user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")
    return user


ReaderDep = Annotated[BaseUser, Depends(reader)]


def may_trigger(request: Request, user: BaseUser, dag_id: str) -> bool:
    """Airflow's own check of the trigger endpoint (POST on the DAG's runs), for showing buttons."""
    try:
        requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=dag_id)(request, user)
    except HTTPException:
        return False
    return True


def same_site_form(request: Request) -> None:
    """Refuse a form posted from another site (a browser says so in Sec-Fetch-Site; the cookie would
    otherwise act for the user). API clients, which send no such header, authenticate with a token."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-site request refused")


def catalog() -> Catalog:
    from dss_airflow.config.loader import get_catalog

    return get_catalog()


def open_ledger() -> Ledger:
    from dss_airflow.images.ledger import Ledger

    return Ledger.default()


@functools.cache
def templates() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("dss_airflow.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def page_data(request: Request, user: BaseUser) -> dict[str, Any]:
    """Everything the page shows, and what this user may do."""
    try:
        loaded = catalog()
    except Exception as exc:  # an invalid config: the page still shows `config validate`
        return {"catalog_error": str(exc), "validation": overview.section(overview.validation)}
    return {
        **overview.overview(loaded, open_ledger),
        "user": user.get_name(),
        "may_trigger": {dag_id: may_trigger(request, user, dag_id) for dag_id in ACTION_DAGS},
    }


def render(request: Request, user: BaseUser, *, error: str | None = None, code: int = 200) -> HTMLResponse:
    data = page_data(request, user)
    notice = None
    if request.query_params.get("dag") in ACTION_DAGS and request.query_params.get("run"):
        dag_id, run_id = request.query_params["dag"], request.query_params["run"]
        href = f"{API_ROOT_PATH}dags/{dag_id}/runs/{quote(run_id, safe='')}"
        notice = {"dag_id": dag_id, "run_id": run_id, "href": href}
    html = (
        templates()
        .get_template("admin.html")
        .render(data=data, user=user.get_name(), error=error, notice=notice)
    )
    return HTMLResponse(html, status_code=code)


def trigger(dag_id: str, conf: dict[str, Any], user: BaseUser) -> str:
    """Create a run of ``dag_id`` through Airflow, as its trigger endpoint does; its run id."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound, DagRunAlreadyExists
    from airflow.utils.types import DagRunTriggeredByType

    try:
        run = trigger_dag(
            dag_id, triggered_by=DagRunTriggeredByType.UI, triggering_user_name=user.get_name(), conf=conf
        )
    except DagNotFound as exc:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND,
            f"DAG {dag_id} is not deployed: add dags/{dag_id}.py to the DAGs folder",
        ) from exc
    except DagRunAlreadyExists as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"{dag_id}: that run exists already, try again"
        ) from exc
    except ValueError as exc:  # the DAG's params refused the conf
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{dag_id}: {exc}") from exc
    if run is None:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, f"{dag_id}: no run was created")
    return str(run.run_id)


def acted(request: Request, user: BaseUser, dag_id: str, conf: dict[str, Any]) -> Response:
    """Run the action; a browser's form goes back to the page (which says so), an API client gets JSON."""
    wants_json = "application/json" in request.headers.get("accept", "")
    try:
        run_id = trigger(dag_id, conf, user)
    except HTTPException as exc:
        if wants_json:
            raise
        return render(request, user, error=str(exc.detail), code=exc.status_code)
    if wants_json:
        return JSONResponse({"dag_id": dag_id, "run_id": run_id, "conf": conf}, status_code=201)
    back = "../../?" + urlencode({"dag": dag_id, "run": run_id})
    return RedirectResponse(back, status_code=status.HTTP_303_SEE_OTHER)


router = APIRouter()


@router.get("/", response_class=HTMLResponse)
def page(request: Request, user: ReaderDep) -> HTMLResponse:
    return render(request, user)


@router.get("/api/overview")
def overview_json(request: Request, user: ReaderDep) -> dict[str, Any]:
    return page_data(request, user)


@router.get("/code-envs/{env}/log", response_class=PlainTextResponse)
def build_log(env: str, config: str, user: ReaderDep) -> str:
    """The last build log of the (env, config) pair, as ``dss-airflow images log`` prints it."""
    text = overview.build_log(open_ledger(), env, config)
    if text is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no build log of {env}/{config}")
    return text


@router.get("/models/{model}/versions/{version}/evaluations/{evaluation}/{plot}")
def plot(model: str, version: str, evaluation: str, plot: str, user: ReaderDep) -> FileResponse:
    try:
        path = overview.plot_file(catalog(), model, version, evaluation, plot)
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return FileResponse(path, media_type="image/png")


@router.post(
    "/code-envs/{env}/rebuild",
    dependencies=[
        Depends(same_site_form),
        Depends(requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=REBUILD_DAG)),
    ],
)
def rebuild(request: Request, env: str, user: ReaderDep) -> Response:
    if env not in catalog().code_envs:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no code env {env!r}")
    return acted(request, user, REBUILD_DAG, {"env": env})


@router.post(
    "/models/{model}/activate",
    dependencies=[
        Depends(same_site_form),
        Depends(requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=PROMOTE_DAG)),
    ],
)
def activate(request: Request, model: str, version: Annotated[str, Form()], user: ReaderDep) -> Response:
    if model not in catalog().models:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model {model!r}")
    return acted(request, user, PROMOTE_DAG, {"model": model, "version": version})


async def login_or_refuse(request: Request, exc: Exception) -> Response:
    """401 to a browser asking for the page: Airflow's login, then back here; anything else as raised."""
    assert isinstance(exc, HTTPException)
    if (
        exc.status_code == 401
        and request.method == "GET"
        and "text/html" in request.headers.get("accept", "")
    ):
        login = get_auth_manager().get_url_login(next_url=str(request.url))
        return RedirectResponse(login, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
    return await http_exception_handler(request, exc)


def create_app() -> FastAPI:
    app = FastAPI(title="dss_airflow admin", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.include_router(router)
    app.add_exception_handler(HTTPException, login_or_refuse)
    return app
