"""The admin page (dss_airflow/ui) in a real ``airflow api-server``, driven by Debian's Chromium.

One Airflow deployment for the module (api-server, scheduler, dag-processor; SimpleAuthManager with an
ADMIN and a VIEWER user), on the example config: a code-env image built with ``dss-airflow images build``
and the retraining DAG run once (``airflow dags test``) before the page is looked at. Screenshots are
saved in ``.run/artefacts/admin-page/`` (printed at the start of the module).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from tests.airflow_cluster import AirflowCluster
from tests.helpers import EXAMPLE_CONFIG

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = [pytest.mark.browser, pytest.mark.airflow, pytest.mark.docker]

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = REPO_ROOT / ".run" / "artefacts" / "admin-page"
API_PORT = 18610  # this worktree's range: 18600-18649
DAGS = ("dss_code_env_rebuild", "dss_model_promote", "dss_model_retraining")
MODEL = "breast-cancer"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, base_image, docker_client, shared_cache) -> Iterator[dict[str, Any]]:
    """Airflow with the admin DAGs, a built image of ``reporting`` and one retraining run."""
    root = tmp_path_factory.mktemp("admin-page")
    dags = root / "dags"
    dags.mkdir()
    for dag_id in DAGS:
        shutil.copy(REPO_ROOT / "dags" / f"{dag_id}.py", dags)
    passwords = {"admin": secrets.token_urlsafe(12), "viewer": secrets.token_urlsafe(12)}
    (root / "passwords.json").write_text(json.dumps(passwords))
    cluster = AirflowCluster.create(
        root / "airflow",
        dags_folder=dags,
        api_port=API_PORT,
        extra_env={
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(API_PORT + 1),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:ADMIN,viewer:VIEWER",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # only what the test unpauses runs
            "DSS_AIRFLOW_CONFIG": str(EXAMPLE_CONFIG),
            "DSS_AIRFLOW_DATA_DIR": str(root / "data"),
            "DSS_AIRFLOW_STATE": str(root / "state"),
            "DSS_AIRFLOW_CACHE": str(shared_cache),
        },
    )
    cluster.env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    try:
        cluster.airflow("db", "migrate")
        cluster.start_core()
        build_image(cluster.env, docker_client)
        cluster.airflow("dags", "test", "dss_model_retraining", timeout=1200)
        cluster.wait_parsed(DAGS)
        cluster.airflow("dags", "unpause", "dss_model_promote")
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        print(f"\nadmin page screenshots: {ARTEFACTS}")
        yield {"cluster": cluster, "base": f"http://127.0.0.1:{API_PORT}", "passwords": passwords}
    finally:
        cluster.stop()


def build_image(env: dict[str, str], docker_client) -> None:
    """``images build reporting``, forced: an image left by an earlier run would be reused, and its log
    is in that run's ledger only. The image it replaces under the same tag goes, unless something uses it."""
    import docker.errors

    ours = {"label": "dss_airflow.code_env=reporting"}
    before = {image.id for image in docker_client.images.list(filters=ours)}
    build = subprocess.run(
        ["dss-airflow", "images", "build", "reporting", "--config", "docker-small", "--force", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    for image_id in before:
        with contextlib.suppress(docker.errors.APIError):  # tagged still, or used by a container
            if not docker_client.images.get(image_id).tags:
                docker_client.images.remove(image_id)


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def signed_in(browser: Browser, deployment: dict[str, Any], user: str) -> tuple[BrowserContext, Page]:
    """A browser that opened the page, was sent to Airflow's login form, signed in and came back."""
    base = deployment["base"]
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{base}/dss-admin/")
    page.wait_for_selector("input[name=username]")
    assert page.url.startswith(f"{base}/auth/login?next="), page.url
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", deployment["passwords"][user])
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/dss-admin/**", timeout=60_000)
    assert page.locator("#user").inner_text() == user
    return context, page


def token(deployment: dict[str, Any], user: str) -> str:
    body = {"username": user, "password": deployment["passwords"][user]}
    response = requests.post(f"{deployment['base']}/auth/token", json=body, timeout=30)
    assert response.status_code == 201, response.text
    return str(response.json()["access_token"])


def active_version(deployment: dict[str, Any]) -> str:
    model_dir = Path(deployment["cluster"].env["DSS_AIRFLOW_DATA_DIR"]) / "models" / MODEL
    return str(json.loads((model_dir / "active.json").read_text())["version"])


def test_anonymous_requests_are_refused(deployment, browser):
    base = f"{deployment['base']}/dss-admin"
    page = requests.get(f"{base}/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    assert page.status_code == 307, "a browser is sent to Airflow's login page"
    assert page.headers["location"].startswith("/auth/login?next=http%3A%2F%2F127.0.0.1")
    for url in (f"{base}/", f"{base}/api/overview", f"{base}/code-envs/reporting/log?config=docker-small"):
        response = requests.get(url, timeout=30)
        assert (response.status_code, response.json()) == (401, {"detail": "Not authenticated"}), url
    posted = requests.post(f"{base}/code-envs/reporting/rebuild", timeout=30)
    assert posted.status_code == 401
    forged = requests.get(f"{base}/api/overview", headers={"Authorization": "Bearer forged"}, timeout=30)
    assert (forged.status_code, forged.json()) == (403, {"detail": "Invalid JWT token"})

    context = browser.new_context()
    anonymous = context.new_page()
    anonymous.goto(f"{base}/")
    anonymous.wait_for_selector("input[name=username]")
    anonymous.screenshot(path=ARTEFACTS / "anonymous-login.png")
    context.close()


def test_admin_sees_configs_envs_image_status_and_roc_plot(deployment, browser):
    context, page = signed_in(browser, deployment, "admin")
    configs = page.locator("#execution-configs [data-config]")
    assert set(configs.evaluate_all("rows => rows.map(r => r.dataset.config)")) == {
        "docker-gpu", "docker-small", "k8s-small", "local", "k8s-spark", "local-spark",
    }  # fmt: skip
    k8s = page.locator('[data-config="k8s-small"]').inner_text()
    assert "kubernetes_default: missing" in k8s and "dss_registry: missing" in k8s, k8s
    assert "none" in page.locator('[data-config="docker-gpu"]').inner_text(), "ml-team only: no project"
    envs = page.locator("section.env").evaluate_all("sections => sections.map(s => s.dataset.env)")
    assert envs == ["ml", "notebooks", "reporting", "spark", "stdlib"]

    built = page.locator('[data-pair="reporting/docker-small"]')
    assert built.locator(".status").inner_text() == "ok"
    assert built.locator(".plan").inner_text() == "current"
    assert built.locator(".current-image").inner_text().startswith("dss-code-envs:reporting-")
    assert page.locator('[data-pair="ml/docker-small"] .plan').inner_text() == "stale: never built"
    assert page.locator("#env-reporting details summary").inner_text().startswith("Resolved lock")
    log_link = built.locator("a").get_attribute("href")
    log = context.request.get(f"{deployment['base']}/dss-admin/{log_link}")
    assert log.status == 200 and "tabulate" in log.text(), log.text()[-2000:]

    active = active_version(deployment)
    roc = page.locator(f'[data-model="{MODEL}"] [data-plots="{active}"] img[data-plot="roc.png"]')
    roc.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=roc.element_handle())
    assert roc.evaluate("img => img.naturalWidth") >= 300, "the ROC curve is shown as an image"
    png = context.request.get(f"{deployment['base']}/dss-admin/{roc.get_attribute('src')}")
    assert png.headers["content-type"] == "image/png" and png.body()[:8] == PNG_SIGNATURE
    assert "active" in page.locator(f'[data-version="{active}"]').inner_text()
    assert page.locator("#validation-summary").inner_text().endswith("2 clusters, 2 models)")
    retrain = page.locator('[data-usage="dss_model_retraining/retrain/local"]').inner_text()
    assert " MiB" in retrain and "1\t" in retrain, "the retraining run's usage, read back from its XCom"
    page.screenshot(path=ARTEFACTS / "admin-page.png", full_page=True)

    page.goto(f"{deployment['base']}/plugin/dss-admin")  # the nav entry: the page in Airflow's UI
    framed = page.frame_locator("iframe")
    assert framed.locator("#user").inner_text(timeout=60_000) == "admin"
    page.screenshot(path=ARTEFACTS / "airflow-nav-entry.png")
    context.close()


def test_rebuild_button_triggers_the_rebuild_dag_for_that_env(deployment, browser):
    context, page = signed_in(browser, deployment, "admin")
    with page.expect_navigation():
        page.click('button[data-rebuild="reporting"]')
    notice = page.locator("#action-notice").inner_text()
    assert "dss_code_env_rebuild run manual__" in notice, notice
    page.screenshot(path=ARTEFACTS / "rebuild-triggered.png")
    runs = deployment["cluster"].query(
        "SELECT conf, triggering_user_name, triggered_by, state FROM dag_run WHERE dag_id = :d",
        d="dss_code_env_rebuild",
    )
    assert len(runs) == 1, runs
    conf, user, triggered_by, state = runs[0]
    assert (json.loads(conf) if isinstance(conf, str) else conf) == {"env": "reporting"}
    assert (user, triggered_by, state) == ("admin", "UI", "queued"), "the DAG is paused: the run waits"

    url = f"{deployment['base']}/dss-admin/code-envs/reporting/rebuild"
    cross_site = context.request.post(url, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross_site.status == 403 and "cross-site" in cross_site.text()
    context.close()


def test_viewer_sees_the_page_read_only_and_cannot_trigger(deployment, browser):
    context, page = signed_in(browser, deployment, "viewer")
    assert page.locator("#read-only").is_visible()
    assert page.locator("[data-rebuild]").count() == 0 and page.locator("[data-activate]").count() == 0
    assert page.locator('[data-pair="reporting/docker-small"] .status').inner_text() == "ok"
    page.screenshot(path=ARTEFACTS / "viewer-read-only.png", full_page=True)
    base = f"{deployment['base']}/dss-admin"
    refused = context.request.post(f"{base}/code-envs/reporting/rebuild")
    assert (refused.status, refused.json()) == (403, {"detail": "Forbidden"})
    refused = context.request.post(f"{base}/models/{MODEL}/activate", form={"version": "latest"})
    assert refused.status == 403
    context.close()
    runs = deployment["cluster"].query("SELECT triggering_user_name FROM dag_run WHERE dag_id LIKE 'dss_%'")
    assert ("viewer",) not in runs


def test_make_active_moves_the_pointer_through_a_dag_run(deployment):
    """The JSON side of the page: promote (here the active version again, forced) runs dss_model_promote,
    whose one task moves the pointer and records why in the history the page lists."""
    active = active_version(deployment)
    headers = {"Authorization": f"Bearer {token(deployment, 'admin')}", "Accept": "application/json"}
    base = f"{deployment['base']}/dss-admin"
    response = requests.post(
        f"{base}/models/{MODEL}/activate", data={"version": active}, headers=headers, timeout=60
    )
    assert response.status_code == 201, response.text
    run_id = response.json()["run_id"]
    cluster = deployment["cluster"]
    assert cluster.wait_run("dss_model_promote", run_id, timeout=600) == "success", cluster.tails()
    overview = requests.get(f"{base}/api/overview", headers=headers, timeout=60).json()
    (model,) = [m for m in overview["models"] if m["name"] == MODEL]
    assert [h["version"] for h in model["history"]] == [active, active]
    assert model["history"][0]["reason"] == "forced by the trigger"
    assert model["history"][0]["run"]["dag_id"] == "dss_model_promote"
