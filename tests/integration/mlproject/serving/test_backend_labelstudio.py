"""The backend connected to a real Label Studio: the server calls it and stores the champion's predictions."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import pytest

from tests.support.models import register_tiny
from tests.support.backend import backend_process, mlflow_store, sample_images

pytestmark = pytest.mark.integration

CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="quality" toName="image" choice="single-radio">
    <Choice value="Normal"/>
    <Choice value="Defective"/>
  </Choices>
</View>"""
AUTH = ("label-studio", "ls-backend-pw-93")


def test_label_studio_gets_the_champions_predictions(labelstudio, tmp_path, synthetic_data):
    from label_studio_sdk.client import LabelStudio

    from integrations.labelstudio.project import Connection, upload_images

    with mlflow_store(tmp_path) as uri:
        champion = register_tiny(tmp_path, synthetic_data, "ls-backend-model")
        # No document root: the backend fetches every image from Label Studio with its own token
        # (local-files and upload URLs alike).
        env = {"LABEL_STUDIO_URL": labelstudio.url, "LABEL_STUDIO_API_KEY": labelstudio.api_key,
               "LOCAL_FILES_DOCUMENT_ROOT": None}
        with backend_process(tmp_path, "ls-backend-model", tracking_uri=uri, env=env, auth=AUTH) as backend:
            ls = LabelStudio(base_url=labelstudio.url, api_key=labelstudio.api_key)
            project = ls.projects.create(title=f"backend test {uuid.uuid4().hex[:8]}", label_config=CONFIG)
            images = sample_images(synthetic_data, 2)
            folder = Path(labelstudio.document_root) / f"backend-{project.id}"
            folder.mkdir(parents=True)
            shutil.copy(images[0], folder / "local0.png")
            storage = ls.import_storage.local.create(project=project.id, path=str(folder), use_blob_urls=True,
                                                     regex_filter=r".*\.png$")
            ls.import_storage.local.sync(id=storage.id)
            upload = tmp_path / "upload1.png"
            shutil.copy(images[1], upload)
            upload_images(Connection(labelstudio.url, labelstudio.api_key, None), ls, project.id, [upload])
            tasks = list(ls.tasks.list(project=project.id, fields="all"))
            urls = sorted(t.data["image"] for t in tasks)
            assert len(tasks) == 2 and urls[0].startswith("/data/local-files/?d=") and urls[1].startswith("/data/upload/")

            ls.ml.create(project=project.id, url=backend.url, title="alloop champion", auth_method="BASIC_AUTH",
                         basic_auth_user=AUTH[0], basic_auth_pass=AUTH[1], is_interactive=False)
            ls.actions.create(id="retrieve_tasks_predictions", project=project.id,
                              selected_items={"all": True, "excluded": []})
            deadline = time.monotonic() + 120
            while len(predictions := ls.predictions.list(project=project.id)) < 2 and time.monotonic() < deadline:
                time.sleep(1)
            log = backend.log_text()
            assert len(predictions) == 2, log[-3000:]
            assert sorted(p.task for p in predictions) == sorted(t.id for t in tasks)
            for prediction in predictions:
                assert prediction.model_version == str(champion)
                assert len(prediction.result) == 1, log[-3000:]
                value = prediction.result[0]
                assert (value["from_name"], value["to_name"], value["type"]) == ("quality", "image", "choices")
                assert value["value"]["choices"][0] in ("Normal", "Defective")
                assert 0.5 <= prediction.score <= 1.0
            assert labelstudio.api_key not in log and AUTH[1] not in log

            # A new champion is registered and promoted: the backend swaps it in, the project's
            # model_version follows, and the next predictions carry the new version.
            ls.projects.update(id=project.id, model_version=str(champion))
            new = register_tiny(tmp_path, synthetic_data, "ls-backend-model", threshold=0.0)
            deadline = time.monotonic() + 120
            while ls.projects.get(id=project.id).model_version != str(new) and time.monotonic() < deadline:
                time.sleep(1)
            assert ls.projects.get(id=project.id).model_version == str(new), backend.log_text()[-3000:]
            ls.actions.create(id="retrieve_tasks_predictions", project=project.id,
                              selected_items={"all": True, "excluded": []})
            deadline = time.monotonic() + 120
            while (len([p for p in ls.predictions.list(project=project.id) if p.model_version == str(new)]) < 2
                   and time.monotonic() < deadline):
                time.sleep(1)
            fresh = [p for p in ls.predictions.list(project=project.id) if p.model_version == str(new)]
            assert sorted(p.task for p in fresh) == sorted(t.id for t in tasks), backend.log_text()[-3000:]
            assert all(p.result[0]["value"]["choices"] == ["Defective"] for p in fresh)  # threshold 0: all defects
