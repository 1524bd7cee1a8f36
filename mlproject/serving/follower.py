"""Keep the model_version of the Label Studio projects the backend serves equal to the champion's.

Label Studio's data manager scores tasks by the predictions of the project's model_version, and
accepts only a version it has seen from a connected backend: listing the project's backends makes
it call our ``/setup`` (which answers the new version) before the project is updated.

Only projects of the configured Label Studio are written, and only those that really called: a
caller names a project as Label Studio does (``"<id>.<created timestamp>"``), and before its first
write the follower checks, with its own credentials, that the project exists on the configured
server, was created at that time and has an ML backend connected. Anyone else who posts a project id
to ``/setup`` or ``/predict`` gets nothing written.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("alloop.serving")

MAX_PROJECTS = 256  # callers remembered; more are ignored (each costs a check against Label Studio)


def parse_project_uid(project) -> tuple[int, int] | None:
    """``(id, created timestamp)`` from Label Studio's ``"<id>.<created timestamp>"``, else None."""
    head, _, tail = str(project or "").partition(".")
    if head.isdigit() and tail.isdigit():
        return int(head), int(tail)
    return None


class ProjectFollower:
    """Called (in its own thread) with each new champion; ``saw`` records the projects that called."""

    def __init__(self, label_studio_url: str | None, api_key: str | None):
        self.label_studio_url, self._api_key = label_studio_url, api_key
        # (project id, created timestamp) as callers sent them; a wrong pair never hides the right one
        self._claimed: set[tuple[int, int]] = set()
        self._verified: set[tuple[int, int]] = set()
        self._lock = threading.Lock()
        self._client = None

    def __repr__(self) -> str:
        return f"ProjectFollower({self.label_studio_url!r}, projects={sorted(self._claimed)})"

    @property
    def projects(self) -> list[int]:
        with self._lock:
            return sorted({project_id for project_id, _ in self._claimed})

    def saw(self, project) -> None:
        uid = parse_project_uid(project)
        if uid is None:
            return  # not Label Studio's form: never followed
        with self._lock:
            if len(self._claimed) < MAX_PROJECTS:
                self._claimed.add(uid)

    def _connect(self):
        if self._client is None:  # checked once: a wrong URL or token is logged with advice
            from integrations.labelstudio.project import Connection, connect

            self._client = connect(Connection(self.label_studio_url, self._api_key, None))
        return self._client

    def is_served_project(self, project_id: int, created: int) -> bool:
        """The project exists on the configured server, was created then, and has an ML backend."""
        client = self._connect()
        try:
            details = client.projects.get(id=project_id)
        except Exception as exc:
            if getattr(exc, "status_code", None) not in (403, 404):
                raise  # the server is down or refuses us: not an answer about the project
            logger.warning("project %s is not followed: %s has no such project (HTTP %s)", project_id,
                           self.label_studio_url, exc.status_code)
            return False
        stamp = getattr(details, "created_at", None)
        if stamp is None or int(stamp.timestamp()) != created:
            logger.warning("project %s is not followed: the caller's project uid does not match the project "
                           "of that id on %s (created at another time)", project_id, self.label_studio_url)
            return False
        if not list(client.ml.list(project=project_id)):
            logger.warning("project %s is not followed: it has no ML backend connected", project_id)
            return False
        return True

    def __call__(self, champion) -> None:
        if not self.projects:
            return
        if not (self.label_studio_url and self._api_key):
            logger.warning("projects %s keep their model_version: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY "
                           "for the backend, or run `alloop predict`", self.projects)
            return
        from integrations.labelstudio.project import sdk_error, set_model_version

        with self._lock:
            unchecked = sorted(self._claimed - self._verified)
        for uid in unchecked:
            try:
                served = self.is_served_project(*uid)
            except Exception as exc:  # noqa: BLE001 — Label Studio down: try again at the next change
                logger.error("project %s: cannot check it on %s: %s", uid[0], self.label_studio_url, sdk_error(exc))
                continue
            with self._lock:
                (self._verified.add if served else self._claimed.discard)(uid)
        for project_id in sorted({project_id for project_id, _ in self._verified}):
            try:
                client = self._connect()
                client.ml.list(project=project_id)  # Label Studio re-reads our /setup
                state = set_model_version(client, project_id, champion.version)
                if state == "pending":
                    # Label Studio accepts a version only once a prediction of it exists: ask for one
                    # (it calls our /predict), then set it. The other tasks get theirs when opened, or
                    # all at once from `alloop predict`.
                    first = next(iter(client.tasks.list(project=project_id, page_size=1, fields="task_only")), None)
                    if first is not None:
                        client.actions.create(id="retrieve_tasks_predictions", project=project_id,
                                              selected_items={"all": False, "included": [first.id]})
                        state = set_model_version(client, project_id, champion.version)
                logger.info("project %s: model_version %s (%s)", project_id, champion.version, state)
            except Exception as exc:  # noqa: BLE001 — never let this take the backend down
                logger.error("project %s: could not set model_version %s: %s", project_id, champion.version,
                             sdk_error(exc))
