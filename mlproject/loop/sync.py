"""One labelling round against a real Label Studio project (``alloop sync``).

1. Every task gets a prediction from the current champion (written in bulk, linked to its version).
2. Backbone embeddings of the open tasks, from the same forward pass, cached per model version.
3. The policy (:mod:`mlproject.loop.policy`) picks auto-labels; they are written as annotations by
   the bot user, linked to the prediction they copy; never on a task anyone annotated, never twice.
4. The rest, most useful first, go to the "Needs review" view (task data ``alloop_review_rank``).
5. With enough new human labels (or when asked): export human + auto labels with provenance to a
   manifest, run the ``finetune`` entry point on it, ``promote`` the new version against a held-out
   set of human labels never used for training; if promoted, predictions, the project's
   model_version and the backend follow, and auto-labels the new champion confidently
   contradicts go back to review.
6. The round is an MLflow run in ``alloop-rounds`` (counts, thresholds, versions, plan, cluster plot).

Crash-safe: the round's plan is saved in its run before anything is applied, every write checks
Label Studio first, and a killed round is resumed by the next ``alloop sync``. Human annotations
are only ever read. One round per project at a time (:mod:`mlproject.loop.round_lock`), and every
round starts by checking for what was written twice (:mod:`mlproject.loop.duplicates`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import numpy as np
from tqdm.auto import tqdm

from integrations import mlflow_registry, mlflow_rounds
from integrations.labelstudio.images import ImageFetcher, ImageFetchError, fetch_all, safe_join
from integrations.labelstudio.label_config import ChoicesTarget, LabelConfigError, map_classes, prediction_result
from integrations.labelstudio.tasks import Annotation, ProjectTasks, Task
from mlproject.data.loaders import manifest_hash, write_manifest
from mlproject.data.records import LabeledImage
from mlproject.loop import round_lock
from mlproject.loop.duplicates import check_duplicates
from mlproject.loop.embeddings import EmbeddingCache, cache_path
from mlproject.loop.policy import AutoLabel, PolicyConfig, ReviewItem, RoundPlan, plan_round, probabilities_from_p_defect

log = logging.getLogger("alloop.loop")

RANK_KEY = "alloop_review_rank"  # position in the "Needs review" queue (1 = first)
REVOKED_KEY = "alloop_revoked"  # why a machine label was taken back: the task must be seen by a person
AUDIT_KEY = "alloop_audit"  # "yes": in the "Audit" view
# Label Studio 1.23 spends ~10 s per prediction import on a 10,000-task project whatever its size (and
# ~3 ms per prediction): import in large batches, and at least every FLUSH_SECONDS so that a crash never
# loses much inference.
FLUSH_PREDICTIONS = 10_000
FLUSH_SECONDS = 300.0
WRITE_THREADS = 4
SAVE_EVERY_S = 30.0
# The training run splits its manifest into train/val/test again (at least one of each class in
# each part); five of a class leave two or more to train on.
MIN_TRAIN_LABELS_PER_CLASS = 5

Hook = Callable[[str, dict], None]


class SyncError(RuntimeError):
    """A round cannot go on; the message says what to do."""


# --- what a round works with ------------------------------------------------------------------------


def project_key(url: str, project_id: int) -> str:
    """A stable name for a project in MLflow tags and cache files."""
    host = urlsplit(url).netloc or url
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', host)}.project-{int(project_id)}"


@dataclass
class LoopProject:
    """The Label Studio side of a round: the project, its labeling config, the bot user, images."""

    tasks: ProjectTasks
    target: ChoicesTarget
    bot_id: int
    fetcher: ImageFetcher
    document_root: str | None
    key: str

    def image_url(self, task: Task) -> str | None:
        value = task.data.get(self.target.image_value_key)
        return str(value) if value else None


@dataclass
class Champion:
    ref: mlflow_registry.VersionRef
    model: object  # mlproject.registry.pyfunc.DefectClassifierModel
    class_names: tuple[str, str]
    threshold: float
    choice_of: dict[str, str]  # class name -> choice value in the labeling config

    @property
    def version(self) -> str:
        return str(self.ref)

    @property
    def positive(self) -> str:
        return self.class_names[1]

    def label_of(self, p_defect: float) -> str:
        return self.class_names[1] if p_defect >= self.threshold else self.class_names[0]

    def class_of_choices(self, choices) -> str | None:
        inverse = {v: k for k, v in self.choice_of.items()}
        return inverse.get(choices[0]) if choices else None

    def p_defect_of(self, prediction) -> float | None:
        """P(defect) back from a stored prediction: its score is the confidence of the chosen class."""
        label = self.class_of_choices(prediction.choices)
        if label is None or prediction.score is None:
            return None
        return float(prediction.score) if label == self.positive else 1.0 - float(prediction.score)


def load_champion(ref, target: ChoicesTarget, label_map: dict | None = None) -> Champion:
    model = mlflow_registry.load_pyfunc(ref).unwrap_python_model()
    names = tuple(model.config["class_names"])
    try:
        choice_of = map_classes(list(names), target.choices, label_map or {})
    except LabelConfigError as exc:
        raise SyncError(f"{ref} cannot fill the project's labeling config: {exc}") from None
    return Champion(ref, model, (str(names[0]), str(names[1])), float(model.config["threshold"]), choice_of)


def confidence_of(label: str, p_defect: float, positive: str) -> float:
    """The score Label Studio shows: the probability of the chosen class (as the backend reports it)."""
    return float(p_defect) if label == positive else 1.0 - float(p_defect)


@dataclass(frozen=True)
class SyncOptions:
    model_name: str
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    retrain_after: int = 50  # new human labels since the newest registered version was trained
    force_retrain: bool = False
    force_round: bool = False  # a new round even when nothing changed since the last one
    holdout_share: float = 0.2  # of human-labelled tasks, kept out of training to judge promotion
    min_holdout_per_class: int = 2
    entry_point: str = "finetune"
    train_params: dict = field(default_factory=dict)
    metric: str = "balanced_accuracy"
    min_improvement: float = 0.0
    recall_tolerance: float = 0.0
    training_experiment: str = "alloop-retrain"
    batch_size: int = 32
    state_dir: Path = Path(".alloop")
    label_map: dict = field(default_factory=dict)
    progress: bool = True
    wait_s: float = 0.0  # for another round of the project to finish (0: refuse at once)
    lease_s: float = round_lock.DEFAULT_LEASE_S  # this round's lock is stale this long after its last heartbeat
    repair_duplicates: bool = False  # delete auto-labels and predictions found written twice

    def __post_init__(self):
        if not 0.0 <= self.holdout_share < 1.0:
            raise ValueError(f"holdout_share must be in [0, 1), got {self.holdout_share}")
        if self.retrain_after < 1:
            raise ValueError(f"retrain_after must be >= 1, got {self.retrain_after}")
        if self.wait_s < 0 or self.lease_s <= 0:
            raise ValueError(f"--wait must be >= 0 and the lock's lease > 0, got {self.wait_s} and {self.lease_s}")


class Timings(dict):
    """Seconds per step of a round, summed over ``with timings("step"): ...`` blocks."""

    @contextmanager
    def __call__(self, step: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self[step] = self.get(step, 0.0) + time.perf_counter() - started


@dataclass
class RoundReport:
    round: int
    resumed: bool
    skipped: bool = False
    champion_before: str = ""
    champion_after: str = ""
    counts: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    run_id: str = ""
    timings: Timings = field(default_factory=Timings)

    def say(self, message: str) -> None:
        log.info(message)
        self.messages.append(message)


# --- step 1 + 2: predictions and embeddings --------------------------------------------------------------


def score_tasks(project: LoopProject, champion: Champion, tasks: list[Task], *, need_embedding: set[int],
                cache: EmbeddingCache, batch_size: int, progress: bool,
                timings: Timings | None = None) -> tuple[int, dict[int, str]]:
    """Predictions for tasks without one from the champion, embeddings for ``need_embedding``.

    Returns (predictions written, {task id: why its image could not be used}). Predictions are
    written in bulk (``FLUSH_PREDICTIONS`` or ``FLUSH_SECONDS``, whichever comes first) and the
    embedding cache saved every ``SAVE_EVERY_S`` seconds: a crash costs some recomputation, never a
    wrong state.
    """
    timings = timings if timings is not None else Timings()
    version = champion.version
    todo = [t for t in tasks if t.prediction_of(version) is None
            or (t.id in need_embedding and cache.get(t.id, project.image_url(t) or "") is None)]
    written, errors, pending = 0, {}, []
    last_save = last_flush = time.monotonic()

    def flush():
        nonlocal written, pending, last_flush
        with timings("write_predictions"):
            written += project.tasks.add_predictions(pending)
        pending, last_flush = [], time.monotonic()

    for start in tqdm(range(0, len(todo), batch_size), desc=f"scoring with {version}", unit="batch",
                      disable=not progress or not todo):
        chunk = todo[start : start + batch_size]
        urls = [project.image_url(t) for t in chunk]
        with timings("inference"):  # reading the images is part of it
            fetched = fetch_all(project.fetcher, urls, image_key=project.target.image_value_key,
                                task_ids=[t.id for t in chunk])
            readable = [(t, url, c) for t, url, (c, error) in zip(chunk, urls, fetched) if c is not None]
            for t, (content, error) in zip(chunk, fetched):
                if content is None:
                    errors[t.id] = error
            if not readable:
                continue
            p_defect, vectors, good, bad = champion.model.score_and_embed(
                [content for _, _, content in readable], sources=[f"task {t.id}" for t, _, _ in readable])
        for failure in bad:
            errors[int(failure.source.split()[-1])] = failure.reason
        for row, index in enumerate(good):
            task, url, _ = readable[index]
            cache.put(task.id, url, vectors[row])
            if task.prediction_of(version) is None:
                label = champion.label_of(p_defect[row])
                result = prediction_result(project.target, champion.choice_of[label],
                                           confidence_of(label, p_defect[row], champion.positive), version)
                pending.append({"task": task.id, **result})
        if len(pending) >= FLUSH_PREDICTIONS or (pending and time.monotonic() - last_flush > FLUSH_SECONDS):
            flush()
        if time.monotonic() - last_save > SAVE_EVERY_S:
            with timings("embedding_cache"):
                cache.save()
            last_save = time.monotonic()
    flush()
    with timings("embedding_cache"):
        cache.save()
    for task_id, error in sorted(errors.items()):
        log.error("task %s: image not used: %s", task_id, error)
    return written, errors


# --- step 5 helpers: labels, manifests ---------------------------------------------------------------------


@dataclass(frozen=True)
class TaskLabel:
    task_id: int
    label: str
    source: str  # human | auto
    annotation_id: int
    created_at: str


def task_labels(tasks: list[Task], champion: Champion, bot_id: int) -> tuple[dict[int, TaskLabel], int]:
    """The label of every labelled task: a person's (newest, not skipped) wins over the bot's.

    Returns (labels, count of human annotations whose choice the model's classes do not cover).
    """
    labels, unmapped = {}, 0
    for task in tasks:
        human = task.human_annotations(bot_id, labelled=True)
        machine = task.machine_annotations(bot_id, labelled=True)
        for source, candidates in (("human", human), ("auto", machine)):
            if not candidates:
                continue
            newest = max(candidates, key=lambda a: (a.created_at, a.id))
            label = champion.class_of_choices(newest.choices)
            if label is None:
                unmapped += source == "human"
                continue
            labels[task.id] = TaskLabel(task.id, label, source, newest.id, newest.created_at)
            break
    return labels, unmapped


def in_holdout(key: str, task_id: int, share: float) -> bool:
    """A fixed share of tasks, chosen by a hash of the task: a task never moves between the two sets."""
    digest = hashlib.sha256(f"{key}:{task_id}".encode()).hexdigest()
    return int(digest[:8], 16) / 2**32 < share


def local_image_path(project: LoopProject, task: Task, images_dir: Path) -> str:
    """A local file for the task's image: the file itself under the document root, else a downloaded copy."""
    url = project.image_url(task) or ""
    parts = urlsplit(url)
    if parts.path.rstrip("/").endswith("/data/local-files") and project.document_root:
        relative = (parse_qs(parts.query).get("d") or [""])[0]
        return str(safe_join(project.document_root, relative))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(parts.path).name or "image")
    target = images_dir / f"{task.id}-{name}"
    if not target.is_file():
        images_dir.mkdir(parents=True, exist_ok=True)
        content = project.fetcher.fetch(url, task_id=task.id)
        tmp = target.with_suffix(target.suffix + ".part")
        tmp.write_bytes(content)
        tmp.replace(target)
    return str(target)


def round_of(created_at: str, round_starts: list[tuple[int, str]]) -> int:
    """The round a label belongs to: the last round started before it was made (the round whose
    queue a person answered, or the round that wrote a machine label)."""
    number = 0
    for round_number, started in round_starts:
        if started <= created_at:
            number = round_number
    return number


# --- the round --------------------------------------------------------------------------------------------


def _plan_to_json(plan: RoundPlan, version: str, tau: float) -> dict:
    return {"model_version": version, "tau": tau,
            "auto_labels": [asdict(a) for a in plan.auto_labels], "review": [asdict(r) for r in plan.review],
            "cluster_of": {str(k): v for k, v in plan.cluster_of.items()},
            "clusters": {str(k): asdict(v) for k, v in plan.clusters.items()},
            "skipped_by_cap": plan.skipped_by_cap}


def _plan_from_json(data: dict) -> tuple[list[AutoLabel], list[ReviewItem], str]:
    return [AutoLabel(**a) for a in data["auto_labels"]], [ReviewItem(**r) for r in data["review"]], data["model_version"]


def effective_policy(options: SyncOptions, key: str) -> PolicyConfig:
    """The policy with tau raised to what an audit asked for, if higher than the option."""
    raised = mlflow_rounds.get_setting(key, "tau")
    policy = options.policy
    if raised is not None and float(raised) > policy.tau:
        from dataclasses import replace

        policy = replace(policy, tau=float(raised))
    return policy


def fingerprint(champion: str, tasks: list[Task], bot_id: int, policy: PolicyConfig) -> str:
    """What a round's decisions depend on: the champion, the tasks, the human annotations, the policy."""
    human = sorted(a.id for t in tasks for a in t.annotations if a.completed_by != bot_id)
    payload = json.dumps([champion, [t.id for t in tasks], human, repr(policy)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run_round(project: LoopProject, options: SyncOptions, *, hook: Hook | None = None) -> RoundReport:
    """One round, resumed if the last one did not finish, under the project's round lock (one round
    per project at a time: :mod:`mlproject.loop.round_lock`). See the module docstring."""
    with round_lock.hold(project.key, wait_s=options.wait_s, lease_s=options.lease_s,
                         round_hint=lambda: str(mlflow_rounds.upcoming_round(project.key))) as lock:
        return _run_round(project, options, lock.guard(hook or (lambda step, info: None)), lock)


def _run_round(project: LoopProject, options: SyncOptions, hook: Hook, lock: round_lock.RoundLock) -> RoundReport:
    timings = Timings()
    with timings("load_model"):
        ref = mlflow_registry.resolve(options.model_name, mlflow_registry.CHAMPION)
        if ref is None:
            raise SyncError(f"registered model {options.model_name!r} has no champion: train one "
                            "(`mlflow run . -e finetune`) and promote it (`mlflow run . -e promote`) first")
        champion = load_champion(ref, project.target, options.label_map)
    caps = options.policy.max_auto_per_class
    unknown = (set(options.policy.class_tau) | (set(caps) if isinstance(caps, dict) else set())) \
        - set(champion.class_names)
    if unknown:
        raise SyncError(f"per-class settings name {sorted(unknown)}, but {champion.version}'s classes are "
                        f"{list(champion.class_names)}")
    with timings("read_state"):
        policy = effective_policy(options, project.key)
        tasks = project.tasks.read(progress=options.progress)
        runs = mlflow_rounds.round_runs(project.key)
    with timings("duplicates"):  # before the "nothing changed" shortcut: that alone would never repair them
        duplicates, notes = check_duplicates(project.tasks, tasks, project.bot_id,
                                             model_prefix=f"{options.model_name}/", repair=options.repair_duplicates)
    state_now = fingerprint(champion.version, tasks, project.bot_id, policy)
    last = runs[-1] if runs else None
    if (last is not None and mlflow_rounds.state_of(last) == "complete" and not options.force_round
            and not options.force_retrain and last.data.tags.get("alloop.fingerprint") == state_now):
        report = RoundReport(mlflow_rounds.round_number(last), resumed=False, skipped=True,
                             champion_before=champion.version, champion_after=champion.version,
                             run_id=last.info.run_id, timings=timings, counts=duplicates.counts(),
                             messages=list(notes))
        report.say(f"nothing changed since round {report.round} (same champion, tasks and human labels): "
                   "no new round; label the 'Needs review' queue, or pass --force-round / --retrain")
        return report

    with timings("record"):
        run, resumed = mlflow_rounds.open_or_new_round(project.key)
        run_id, state = run.info.run_id, mlflow_rounds.state_of(run)
        report = RoundReport(mlflow_rounds.round_number(run), resumed, champion_before=champion.version,
                             run_id=run_id, timings=timings, counts=duplicates.counts(), messages=list(notes))
        lock.update(round=str(report.round), run_id=run_id)
        mlflow_rounds.log_params(run_id, {**{f"policy_{k}": v for k, v in asdict(policy).items()},
                                          "retrain_after": options.retrain_after,
                                          "holdout_share": options.holdout_share, "entry_point": options.entry_point,
                                          "model_name": options.model_name, "project": project.key,
                                          "champion_at_start": champion.version})
        mlflow_rounds.set_tags(run_id, {"alloop.champion_before": champion.version, "alloop.fingerprint_start":
                                        state_now})
    if resumed:
        report.say(f"resuming round {report.round} (it stopped after step '{state}')")
    counts = report.counts
    counts.update(tasks=len(tasks), revoked=0)

    # 1 + 2: predictions for every task, embeddings for the open ones
    cache = EmbeddingCache(cache_path(options.state_dir, champion.version, project.key))
    written, errors = score_tasks(project, champion, tasks, need_embedding={t.id for t in tasks if not t.annotations},
                                  cache=cache, batch_size=options.batch_size, progress=options.progress,
                                  timings=timings)
    counts.update(predicted=written, unreadable=len(errors))
    with timings("read_state"):
        if written:
            project.tasks.refresh_predictions(tasks)  # their ids link the machine labels to them
    with timings("write_labels"):
        from integrations.labelstudio.project import set_model_version

        set_model_version(project.tasks.client, project.tasks.project_id, champion.version)
        previous = next((r.data.tags.get("alloop.champion_after") for r in reversed(runs)
                         if mlflow_rounds.state_of(r) == "complete"), None)
        if previous and previous != champion.version and state == "started":
            report.say(f"the champion changed since the last round ({previous} -> {champion.version})")
            revoke_contradicted(project, champion, tasks, policy, report)
    hook("predicted", {"written": written})
    open_tasks = [t for t in tasks if not t.annotations]

    # 3: the plan, computed once per round and kept in the round's run
    stored = mlflow_rounds.load_json(run_id, "plan.json") if resumed else None
    if stored is not None:
        auto_labels, review, plan_version = _plan_from_json(stored)
        report.say(f"using the plan saved by round {report.round} ({len(auto_labels)} auto-labels, "
                   f"{len(review)} to review)")
    else:
        with timings("plan"):
            plan, cluster_embeddings = _plan(project, champion, open_tasks, cache, errors, policy)
        auto_labels, review, plan_version = plan.auto_labels, plan.review, champion.version
        with timings("record"):
            mlflow_rounds.log_json(run_id, _plan_to_json(plan, champion.version, policy.tau), "plan.json")
            mlflow_rounds.set_state(run_id, "planned")
            _log_plan_files(run_id, plan, cluster_embeddings, report.round)
        counts.update({f"plan.{k}": v for k, v in plan.counts().items()})
    hook("planned", {"auto_labels": len(auto_labels), "review": len(review)})

    if state in ("started", "planned"):
        with timings("write_labels"):
            made, skipped = _apply_auto_labels(project, tasks, auto_labels, plan_version, champion, hook)
        counts.update(auto_labelled=made, auto_skipped=skipped)
        with timings("write_queue"):
            queued = _apply_review_queue(project, tasks, review)
        counts.update(routed=len(review), queue_updates=queued)
        mlflow_rounds.set_state(run_id, "applied")
        hook("applied", {"auto_labelled": made})

    # 5: retrain, promote, follow
    with timings("retrain"):
        _maybe_retrain(project, options, champion, tasks, report, hook,
                       trained_before_restart=run.data.tags.get("alloop.challenger") if resumed else None)
    report.champion_after = str(mlflow_registry.resolve(options.model_name, mlflow_registry.CHAMPION))

    # 6: the round's record. The fingerprint is of the state the round started from: a person who
    # labels while it runs makes the next `alloop sync` a new round.
    with timings("record"):
        ending = state_now if report.champion_after == champion.version else \
            fingerprint(report.champion_after, project.tasks.read(progress=False), project.bot_id, policy)
        mlflow_rounds.log_metrics(run_id, {**{k: v for k, v in counts.items() if isinstance(v, (int, float))},
                                           **{f"seconds.{k}": v for k, v in timings.items()}})
        mlflow_rounds.set_tags(run_id, {"alloop.champion_after": report.champion_after, "alloop.fingerprint": ending})
        mlflow_rounds.log_json(run_id, {"counts": counts, "messages": report.messages,
                                        "seconds": dict(timings)}, "round.json")
        mlflow_rounds.finish(run_id)
    hook("complete", {})
    return report


def _plan(project: LoopProject, champion: Champion, open_tasks: list[Task], cache: EmbeddingCache,
          errors: dict, policy: PolicyConfig) -> tuple[RoundPlan, np.ndarray]:
    ids, p_defect, vectors, forced = [], [], [], []
    for task in open_tasks:
        prediction = task.prediction_of(champion.version)
        vector = cache.get(task.id, project.image_url(task) or "")
        p = champion.p_defect_of(prediction) if prediction else None
        if task.id in errors or p is None or vector is None:
            continue
        ids.append(task.id)
        p_defect.append(p)
        vectors.append(vector)
        forced.append(bool(task.data.get(REVOKED_KEY)))
    embeddings = np.stack(vectors) if vectors else np.zeros((0, 1), np.float32)
    probabilities = probabilities_from_p_defect(p_defect, champion.class_names)
    plan = plan_round(ids, probabilities, embeddings, champion.class_names, policy, needs_review=forced)
    # The machine label must be the label the champion's prediction shows (its threshold may not be 0.5).
    by_id = dict(zip(ids, p_defect))
    agreeing = [a for a in plan.auto_labels if champion.label_of(by_id[a.task_id]) == a.label]
    if len(agreeing) != len(plan.auto_labels):
        log.info("%d auto-label(s) dropped: the champion's threshold labels them otherwise",
                 len(plan.auto_labels) - len(agreeing))
        plan = RoundPlan(agreeing, plan.review, plan.cluster_of, plan.clusters, plan.skipped_by_cap)
    order = np.argsort(ids)
    return plan, embeddings[order] if len(ids) else embeddings


def _in_parallel(function, items: list, threads: int = WRITE_THREADS):
    """``function`` over ``items`` on a few threads, results in order: Label Studio answers each write
    in 100-200 ms, most of it waiting, so a handful in flight keeps the round short."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(function, items))


def _apply_auto_labels(project: LoopProject, tasks: list[Task], auto_labels: list[AutoLabel], version: str,
                       champion: Champion, hook: Hook) -> tuple[int, int]:
    """Write the plan's machine labels; a task annotated by anyone meanwhile is left alone."""
    by_id = {t.id: t for t in tasks}
    made = skipped = 0
    for start in range(0, len(auto_labels), 50):
        chunk = auto_labels[start : start + 50]
        counts_now = project.tasks.annotation_counts([a.task_id for a in chunk])  # the last check, per chunk
        todo = []
        for item in chunk:
            task = by_id.get(item.task_id)
            prediction = task.prediction_of(version) if task else None
            if task is None or counts_now.get(item.task_id, 1) > 0 or prediction is None:
                skipped += 1  # annotated meanwhile (by a person, or by this round before a restart), or gone
                continue
            todo.append((item, task, prediction))

        def write(entry):
            item, task, prediction = entry
            result = prediction_result(project.target, champion.choice_of[item.label], item.confidence, version)
            annotation_id = project.tasks.add_annotation(item.task_id, result["result"], completed_by=project.bot_id,
                                                         parent_prediction=prediction.id)
            return Annotation(annotation_id, task.id, project.bot_id, (champion.choice_of[item.label],), False,
                              prediction.id, _now_iso(), result["result"])

        for (item, task, _), annotation in zip(todo, _in_parallel(write, todo)):
            task.annotations.append(annotation)
            made += 1
            hook("auto_label", {"task": item.task_id, "made": made})
    return made, skipped


def _apply_review_queue(project: LoopProject, tasks: list[Task], review: list[ReviewItem]) -> int:
    """Put the queue's ranks on the open tasks (and take stale ranks off); returns the tasks changed."""
    rank = {r.task_id: r.rank for r in review}
    # labelled tasks are out of the view anyway: their data is left as it is
    changes = [(task, rank.get(task.id)) for task in tasks
               if not task.annotations and task.data.get(RANK_KEY) != rank.get(task.id)]
    return sum(_in_parallel(lambda change: project.tasks.set_data_fields(change[0], {RANK_KEY: change[1]}), changes))


def _log_plan_files(run_id: str, plan: RoundPlan, embeddings, round_number: int) -> None:
    from mlproject.loop.plots import plot_round_clusters

    with tempfile.TemporaryDirectory() as tmp:
        auto_path = Path(tmp) / "auto_labels.csv"
        with auto_path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["task", "label", "confidence", "cluster"])
            writer.writerows([a.task_id, a.label, f"{a.confidence:.6f}", a.cluster] for a in plan.auto_labels)
        review_path = Path(tmp) / "review_queue.csv"
        with review_path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["rank", "task", "usefulness", "cluster"])
            writer.writerows([r.rank, r.task_id, f"{r.score:.6f}", r.cluster] for r in plan.review)
        mlflow_rounds.log_file(run_id, auto_path)
        mlflow_rounds.log_file(run_id, review_path)
        if len(embeddings) >= 2:
            png = plot_round_clusters(embeddings, sorted(plan.cluster_of), plan, Path(tmp) / "clusters.png",
                                      title=f"round {round_number}")
            mlflow_rounds.log_file(run_id, png)


# --- step 5 ------------------------------------------------------------------------------------------------


def _maybe_retrain(project: LoopProject, options: SyncOptions, champion: Champion, tasks: list[Task],
                   report: RoundReport, hook: Hook, trained_before_restart: str | None = None) -> None:
    """Step 5. ``trained_before_restart``: the version this round trained before it was killed (the
    decision to retrain was made then; now the version is judged)."""
    from integrations.mlflow_runs import EntryPointError, entry_point_parameters, run_entry_point

    def run(entry_point: str, params: dict) -> None:
        try:
            run_entry_point(entry_point, params, experiment=options.training_experiment)
        except EntryPointError as exc:
            raise SyncError(f"{exc}. This round's auto-labels and review queue are written; fix the cause and "
                            "run `alloop sync` again to retry from here") from exc

    counts = report.counts
    labels, unmapped = task_labels(tasks, champion, project.bot_id)
    if unmapped:
        report.say(f"{unmapped} human label(s) use a choice the model's classes {champion.class_names} do not "
                   "cover; they are left out of training")
    human = {t: lab for t, lab in labels.items() if lab.source == "human"}
    holdout = {t: lab for t, lab in human.items() if in_holdout(project.key, t, options.holdout_share)}
    train = {t: lab for t, lab in labels.items() if t not in holdout}
    # new since the last retrain (the newest version's human labels), so a rejected challenger is not
    # retrained on the same labels round after round
    trained_on = max([int(float(v)) for v in mlflow_registry.versions_tag_values(options.model_name,
                                                                                 "labels_by_source.human")] or [0])
    new_human = sum(lab.source == "human" for lab in train.values()) - trained_on
    counts.update(human_labels=len(human), holdout_labels=len(holdout), train_labels=len(train),
                  auto_labels_total=sum(lab.source == "auto" for lab in labels.values()),
                  new_human_labels=max(new_human, 0), retrained=0, promoted=0)
    if trained_before_restart is None:
        if not options.force_retrain and new_human < options.retrain_after:
            report.say(f"{max(new_human, 0)} new human label(s) since the last model was trained; "
                       f"retraining after {options.retrain_after} (or pass --retrain)")
            return
        by_class = {c: sum(lab.label == c for lab in train.values()) for c in champion.class_names}
        if min(by_class.values()) < MIN_TRAIN_LABELS_PER_CLASS:
            report.say(f"not retraining: the training labels {by_class} need at least "
                       f"{MIN_TRAIN_LABELS_PER_CLASS} of each class")
            return

    run_id = report.run_id
    state_dir = Path(options.state_dir) / "rounds" / project.key / f"round-{report.round}"
    starts = [(mlflow_rounds.round_number(r), _iso(r.info.start_time)) for r in mlflow_rounds.round_runs(project.key)]
    by_id = {t.id: t for t in tasks}
    images_dir = Path(options.state_dir) / "images" / project.key
    records, holdout_records, unreadable = [], [], 0
    for task_id, lab in sorted(labels.items()):
        try:
            path = local_image_path(project, by_id[task_id], images_dir)
        except (ImageFetchError, OSError) as exc:
            unreadable += 1
            log.error("task %s left out of the manifest: %s", task_id, exc)
            continue
        record = LabeledImage(path, lab.label, lab.source, round_of(lab.created_at, starts))
        (holdout_records if task_id in holdout else records).append(record)
    if unreadable:
        report.say(f"{unreadable} labelled task(s) left out of the manifests: their images could not be read")
    counts["manifest_unreadable"] = unreadable
    train_manifest = write_manifest(state_dir / "train.csv", records)
    holdout_manifest = write_manifest(state_dir / "holdout.csv", holdout_records)
    mlflow_rounds.log_file(run_id, train_manifest, "manifests")
    mlflow_rounds.log_file(run_id, holdout_manifest, "manifests")
    digest = manifest_hash(records)

    lineage = {"round": str(report.round), "manifest_hash": digest}
    if trained_before_restart is not None:
        version = mlflow_registry.VersionRef(*trained_before_restart.rsplit("/", 1))
        report.say(f"{version} was trained by this round before it stopped: judging it now")
    elif (existing := mlflow_registry.find_version(options.model_name, lineage)) is not None:
        version = existing
        report.say(f"{version} was already trained on this round's manifest: reusing it")
    else:
        allowed = set(entry_point_parameters(options.entry_point))
        inherited = {k: v for k, v in mlflow_registry.training_params(champion.ref).items()
                     if k in allowed and k not in ("data", "layout", "pattern", "registered_model_name", "round")}
        params = {**inherited, **options.train_params, "data": str(train_manifest), "layout": "manifest",
                  "registered_model_name": options.model_name, "round": report.round, "skip_bad_images": "true"}
        unknown = set(options.train_params) - allowed
        if unknown:
            raise SyncError(f"--train-param {sorted(unknown)} not parameters of entry point {options.entry_point!r}: "
                            f"choose from {sorted(allowed)}")
        report.say(f"retraining: mlflow run . -e {options.entry_point} on {len(records)} labels "
                   f"({sum(r.source == 'human' for r in records)} human, {sum(r.source == 'auto' for r in records)} auto)")
        run(options.entry_point, params)
        version = mlflow_registry.find_version(options.model_name, lineage)
        if version is None:
            raise SyncError(f"the {options.entry_point} run finished but registered no version of "
                            f"{options.model_name} for round {report.round}; see experiment {options.training_experiment}")
    counts["retrained"] = 1
    mlflow_rounds.set_tags(run_id, {"alloop.challenger": str(version)})
    mlflow_rounds.set_state(run_id, "trained")
    hook("trained", {"version": str(version)})

    # promotion is judged on human labels the challenger never saw
    tags = mlflow_registry.version_tags(version)
    if "promotion" not in tags:
        holdout_counts = {c: sum(r.label == c for r in holdout_records) for c in champion.class_names}
        if min(holdout_counts.values()) < options.min_holdout_per_class:
            report.say(f"{version} stays challenger: the held-out human labels {holdout_counts} need at least "
                       f"{options.min_holdout_per_class} of each class to judge it; label more and run sync again")
            return
        if mlflow_registry.resolve(options.model_name, mlflow_registry.CHALLENGER) != version:
            mlflow_registry.set_alias(version, mlflow_registry.CHALLENGER)
        run("promote", {"model_name": options.model_name, "eval_data": str(holdout_manifest), "layout": "manifest",
                        "split": "all", "metric": options.metric, "min_improvement": options.min_improvement,
                        "recall_tolerance": options.recall_tolerance})
        tags = mlflow_registry.version_tags(version)
    promoted = tags.get("promotion") == "promoted"
    report.say(f"{version}: {tags.get('promotion', 'not judged')} ({tags.get('promotion_reason', '')})")
    if not promoted:
        return
    counts["promoted"] = 1
    hook("promoted", {"version": str(version)})
    _follow_new_champion(project, options, version, report)


def _follow_new_champion(project: LoopProject, options: SyncOptions, ref, report: RoundReport) -> None:
    """After a promotion: the new champion's predictions everywhere, the project's model_version, and
    the machine labels it contradicts sent back to review."""
    from integrations.labelstudio.project import set_model_version

    champion = load_champion(ref, project.target, options.label_map)
    tasks = project.tasks.read(progress=False)
    cache = EmbeddingCache(cache_path(options.state_dir, champion.version, project.key))
    written, _ = score_tasks(project, champion, tasks, need_embedding={t.id for t in tasks if not t.annotations},
                             cache=cache, batch_size=options.batch_size, progress=options.progress)
    report.counts["predicted_by_new_champion"] = written
    tasks = project.tasks.read(progress=False)
    set_model_version(project.tasks.client, project.tasks.project_id, champion.version)
    revoke_contradicted(project, champion, tasks, effective_policy(options, project.key), report)


def revoke_machine_labels(project: LoopProject, task: Task, reason: str) -> bool:
    """Take the loop's labels off ``task`` and mark it (``alloop_revoked``: ``reason``) so the next
    rounds route it to people. Never on a task a person has annotated: that label stands.
    True when a label was taken back."""
    if task.touched_by_people(project.bot_id):
        return False
    machine = [a for a in task.annotations if a.completed_by == project.bot_id]
    if not machine:
        return False
    for annotation in machine:
        project.tasks.delete_annotation(annotation.id)
    task.annotations = [a for a in task.annotations if a not in machine]
    project.tasks.set_data_fields(task, {REVOKED_KEY: reason})
    return True


def revoke_contradicted(project: LoopProject, champion: Champion, tasks: list[Task], policy: PolicyConfig,
                        report: RoundReport) -> int:
    """Machine labels from older models that ``champion`` confidently contradicts go back to review.

    Only tasks no person has annotated; the bot's annotation is deleted and the task marked
    (``alloop_revoked``) so the next rounds route it to people instead of labelling it again.
    """
    revoked = 0
    for task in tasks:
        machine = task.machine_annotations(project.bot_id)
        prediction = task.prediction_of(champion.version)
        if task.touched_by_people(project.bot_id) or not machine or prediction is None:
            continue  # a person's label stands; nothing to revoke, or nothing to judge it by
        now = champion.class_of_choices(prediction.choices)
        before = champion.class_of_choices(machine[-1].choices)
        confidence = float(prediction.score or 0.0)
        if now is not None and now != before and confidence >= policy.tau_for(now):
            revoked += revoke_machine_labels(project, task, f"round {report.round}: auto-label {before!r} contradicted "
                                                            f"by {champion.version} ({now!r}, {confidence:.3f})")
    report.counts["revoked"] = report.counts.get("revoked", 0) + revoked
    if revoked:
        report.say(f"{revoked} auto-label(s) that {champion.version} confidently contradicts went back to review")
    return revoked


def _now_iso() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _iso(millis: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(millis / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")




def open_project(connection, project: str, *, from_name: str | None = None) -> LoopProject:
    """The round's view of a Label Studio project given by id or title (made by ``alloop init``)."""
    from integrations.labelstudio import project as lsp
    from integrations.labelstudio.label_config import parse_choices_target
    from integrations.labelstudio.server import LabelStudioError

    client = lsp.connect(connection)
    found = [p for p in client.projects.list() if str(p.id) == str(project) or p.title == project]
    if not found:
        raise LabelStudioError(f"no Label Studio project {project!r} at {connection.url} (by id or title); "
                               "create it with `alloop init --images FOLDER --title ...`")
    if len(found) > 1:
        raise LabelStudioError(f"{len(found)} projects are titled {project!r}: pass its id instead "
                               f"({', '.join(str(p.id) for p in found)})")
    details = client.projects.get(id=found[0].id)
    try:
        target = parse_choices_target(details.label_config, from_name)
    except LabelConfigError as exc:
        raise LabelStudioError(f"project {details.id}: {exc}") from None
    bot_id, _ = lsp.ensure_bot_user(client)
    lsp.ensure_views(client, details.id, bot_id)  # the loop's views read the task data it writes
    fetcher = ImageFetcher(connection.document_root, connection.url, connection.api_key, [])
    return LoopProject(ProjectTasks(client, connection.url, details.id, from_name=target.from_name), target, bot_id,
                       fetcher, connection.document_root, project_key(connection.url, details.id))
