"""An annotator sees the champion's prediction pre-selected in Label Studio's labeling UI (headless Chromium).

Real Label Studio (the session's server), the real ML backend process serving a tiny registered
champion, a project with an Image + Choices config, tasks from a local-files storage, the backend
connected and asked for predictions (action ``retrieve_tasks_predictions``). Then a browser
(Playwright driving Debian's ``/usr/bin/chromium``) logs in through Label Studio's login form as a
second, non-admin user and opens each task: the choice the backend predicted for it (read from the
stored prediction) must be shown selected, the other choice not.

The annotator: Label Studio Community's user API ignores passwords, so the test signs the user up
through the organisation's invite link (``/user/signup/?token=...``, the way Community adds
annotators; it has no roles, so this is an ordinary organisation member, not the admin who started
the server) and then logs in with that email and password in the browser.

Prerequisites: ``playwright`` (the ``test`` extra) and Debian's Chromium (``apt-get install -y
chromium``; ``scripts/setup.sh`` installs it when it can). Never ``playwright install`` (no download
here). Without Chromium the test fails and says how to install it. On a failure a screenshot of the
page is written to the test's tmp dir and its path is in the message.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.support.models import register_tiny
from tests.support.backend import backend_process, mlflow_store, sample_images

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("ALLOOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHOICES = ("Normal", "Defective")
CONFIG = f"""<View>
  <Image name="image" value="$image"/>
  <Choices name="quality" toName="image" choice="single-radio">
    <Choice value="{CHOICES[0]}"/>
    <Choice value="{CHOICES[1]}"/>
  </Choices>
</View>"""
ANNOTATOR_PASSWORD = "Annotator-pw-5821"
UI_TIMEOUT_MS = 90_000  # a 2-core machine running TensorFlow and Label Studio renders slowly


@pytest.fixture(scope="session")
def playwright_api():
    """Playwright's sync API, or a failure that says how to install what is missing (never a skip).

    Session-scoped and listed first so that it fails before the Label Studio server is started.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs Playwright for Python: pip install -e '.[test]' (or pip install playwright); "
                    "do not run `playwright install`, the test uses Debian's Chromium")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"the browser test needs Chromium at {CHROMIUM}: install Debian's package with "
                    "`sudo apt-get update && sudo apt-get install -y chromium` (scripts/setup.sh does this as root), "
                    "or point ALLOOP_CHROMIUM at a Chromium binary")
    return sync_playwright


def _sign_up_annotator(ls, url: str) -> str:
    """A new organisation member with a password, through the invite link (Community's way); returns its email."""
    token = ls.organizations.invites.get_invite_link().token
    email = f"annotator-{uuid.uuid4().hex[:8]}@alloop.local"
    signup = f"{url}/user/signup/?token={token}"
    with requests.Session() as session:
        session.get(signup, timeout=30).raise_for_status()
        response = session.post(signup, data={"email": email, "password": ANNOTATOR_PASSWORD,
                                              "csrfmiddlewaretoken": session.cookies.get("csrftoken", "")},
                                headers={"Referer": signup}, allow_redirects=False, timeout=30)
    assert response.status_code == 302, f"signup through the invite link failed: HTTP {response.status_code}"
    members = {user.email: user for user in ls.users.list()}
    assert email in members, f"{email} did not join the organisation"
    assert not getattr(members[email], "is_superuser", False)
    return email


def test_annotator_sees_the_backends_prediction_selected(playwright_api, labelstudio, tmp_path, synthetic_data):
    from playwright.sync_api import expect

    from label_studio_sdk.client import LabelStudio

    with mlflow_store(tmp_path) as uri:
        champion = register_tiny(tmp_path, synthetic_data, "browser-model")
        env = {"LABEL_STUDIO_URL": labelstudio.url, "LABEL_STUDIO_API_KEY": labelstudio.api_key,
               "LOCAL_FILES_DOCUMENT_ROOT": labelstudio.document_root}
        with backend_process(tmp_path, "browser-model", tracking_uri=uri, env=env) as backend:
            ls = LabelStudio(base_url=labelstudio.url, api_key=labelstudio.api_key)
            project = ls.projects.create(title=f"browser test {uuid.uuid4().hex[:8]}", label_config=CONFIG,
                                         show_collab_predictions=True)  # "use predictions to pre-label tasks"
            folder = Path(labelstudio.document_root) / f"browser-{project.id}"
            folder.mkdir(parents=True)
            for i, image in enumerate(sample_images(synthetic_data, 2)):
                shutil.copy(image, folder / f"task{i}.png")
            storage = ls.import_storage.local.create(project=project.id, path=str(folder), use_blob_urls=True,
                                                     regex_filter=r".*\.png$")
            ls.import_storage.local.sync(id=storage.id)
            tasks = sorted(ls.tasks.list(project=project.id, fields="all"), key=lambda t: t.id)
            assert len(tasks) == 2

            # Connect the backend and let Label Studio fetch and store its predictions.
            ls.ml.create(project=project.id, url=backend.url, title="alloop champion", is_interactive=False)
            ls.actions.create(id="retrieve_tasks_predictions", project=project.id,
                              selected_items={"all": True, "excluded": []})
            deadline = time.monotonic() + 120
            while len(predictions := ls.predictions.list(project=project.id)) < len(tasks):
                assert time.monotonic() < deadline, backend.log_text()[-3000:]
                time.sleep(1)
            predicted = {}
            for prediction in predictions:
                assert prediction.model_version == str(champion), backend.log_text()[-3000:]
                assert len(prediction.result) == 1, backend.log_text()[-3000:]
                predicted[prediction.task] = prediction.result[0]["value"]["choices"][0]
            assert set(predicted) == {t.id for t in tasks} and set(predicted.values()) <= set(CHOICES)
            # Pre-label with the champion's version, as `alloop init` keeps it (Label Studio accepts a
            # version only once it has predictions of it).
            ls.projects.update(id=project.id, model_version=str(champion))

            email = _sign_up_annotator(ls, labelstudio.url)
            screenshot = tmp_path / "annotator.png"
            with playwright_api() as playwright:
                context = playwright.chromium.launch_persistent_context(
                    str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
                    args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 1000})
                page = context.new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                expect.set_options(timeout=UI_TIMEOUT_MS)
                try:
                    page.goto(f"{labelstudio.url}/user/login/")
                    page.fill("input[name=email]", email)
                    page.fill("input[name=password]", ANNOTATOR_PASSWORD)
                    page.click("button[type=submit]")
                    page.wait_for_load_state("networkidle")
                    assert "/user/login" not in page.url, f"the login form did not log {email} in"

                    for task in tasks:
                        choice = predicted[task.id]
                        other = next(c for c in CHOICES if c != choice)
                        page.goto(f"{labelstudio.url}/projects/{project.id}/data?task={task.id}")
                        predicted_radio = page.get_by_role("radio", name=re.compile(rf"^{choice}\b"))
                        other_radio = page.get_by_role("radio", name=re.compile(rf"^{other}\b"))
                        other_radio.wait_for(state="attached")
                        # The prediction becomes the annotator's draft once the task has loaded.
                        try:
                            expect(predicted_radio).to_be_checked()
                        except AssertionError:
                            raise AssertionError(f"task {task.id}: the predicted choice {choice!r} is not shown "
                                                 f"selected") from None
                        assert not other_radio.is_checked(), f"task {task.id}: {other!r} is selected too"
                        # the prediction's own tab names the model version it came from
                        assert page.get_by_text(str(champion)).count() >= 1, \
                            f"task {task.id}: no prediction tab for {champion}"
                except Exception as exc:
                    try:
                        page.screenshot(path=str(screenshot), full_page=True)
                        where = f"screenshot: {screenshot}"
                    except Exception as shot_error:  # the page may be gone
                        where = f"no screenshot ({shot_error.__class__.__name__})"
                    raise AssertionError(f"{exc} [{where}; page {page.url}]") from exc
                finally:
                    context.close()
