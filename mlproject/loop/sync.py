"""One labelling round against a real Label Studio project (``alloop sync``).

1. Every task gets a prediction from the current champion (written in bulk, linked to its version).
2. Backbone embeddings of the open tasks, from the same forward pass, cached per model version
   (:mod:`mlproject.loop.scoring`).
3. The policy (:mod:`mlproject.loop.policy`) picks auto-labels; they are written as annotations by
   the bot user, linked to the prediction they copy; never on a task anyone annotated, never twice.
4. The rest, most useful first, go to the "Needs review" view (:mod:`mlproject.loop.apply`).
5. With enough new human labels (or when asked): retrain on human + auto labels, judge the new
   version on held-out human labels, follow a promotion (:mod:`mlproject.loop.retrain`).
6. The round is an MLflow run in ``alloop-rounds`` (:mod:`mlproject.loop.ledger`).

Crash-safe: the round's plan is saved in its run before anything is applied, every write checks
Label Studio first, and a killed round is resumed by the next ``alloop sync``. Human annotations
are only ever read. One round per project at a time (:mod:`mlproject.loop.round_lock`), and every
round starts by checking for what was written twice (:mod:`mlproject.loop.duplicates`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from integrations import mlflow_registry, mlflow_rounds
from integrations.labelstudio.label_config import LabelConfigError
from integrations.labelstudio.tasks import Task
from mlproject.loop import retrain, round_lock
from mlproject.loop.apply import apply_auto_labels, apply_review_queue, make_plan
from mlproject.loop.duplicates import check_duplicates
from mlproject.loop.embeddings import EmbeddingCache, cache_path
from mlproject.loop.labels import count_by_class, fingerprint, split_labels, task_labels
from mlproject.loop.ledger import RoundLedger
from mlproject.loop.options import SyncOptions, effective_policy
from mlproject.loop.policy import PolicyConfig
from mlproject.loop.project import LoopProject
from mlproject.loop.revoke import revoke_contradicted
from mlproject.loop.round_report import RoundReport, SyncError, Timings
from mlproject.loop.scoring import score_tasks
from mlproject.serving.champion import ChampionChoices, load_champion, no_champion_message

Hook = Callable[[str, dict], None]


def champion_for(ref, project: LoopProject, label_map: dict | None = None) -> ChampionChoices:
    """The champion ``ref`` as it fills the project's labeling config."""
    champion = load_champion(ref)
    try:
        return champion.choices_for(project.target, label_map)
    except LabelConfigError as exc:
        raise SyncError(f"{ref} cannot fill the project's labeling config: {exc}") from None


def _check_per_class_settings(policy: PolicyConfig, choices: ChampionChoices) -> None:
    try:
        policy.check_class_names(choices.champion.class_names)
    except ValueError as exc:
        raise SyncError(f"{exc} ({choices.champion.version}'s classes)") from None


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
            raise SyncError(no_champion_message(options.model_name))
        choices = champion_for(ref, project, options.label_map)
    champion = choices.champion
    _check_per_class_settings(options.policy, choices)
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
        ledger = RoundLedger.open(project.key)
        report = RoundReport(ledger.number, ledger.resumed, champion_before=champion.version, run_id=ledger.run_id,
                             timings=timings, counts=duplicates.counts(), messages=list(notes))
        lock.update(round=str(report.round), run_id=ledger.run_id)
        ledger.record_start({**{f"policy_{k}": v for k, v in asdict(policy).items()},
                             "retrain_after": options.retrain_after, "holdout_share": options.holdout_share,
                             "entry_point": options.retrain_entry_point(champion.variant),
                             "model_name": options.model_name,
                             "project": project.key, "champion_at_start": champion.version},
                            champion.version, state_now)
    if ledger.resumed:
        report.say(f"resuming round {report.round} (it stopped after step '{ledger.state}')")
    counts = report.counts
    counts.update(tasks=len(tasks), revoked=0)

    # 1 + 2: predictions for every task, embeddings for the open ones
    cache = EmbeddingCache(cache_path(options.state_dir, champion.version, project.key))
    written, errors = score_tasks(project, choices, tasks, need_embedding={t.id for t in tasks if not t.annotations},
                                  cache=cache, batch_size=options.batch_size, progress=options.progress,
                                  timings=timings)
    counts.update(predicted=written, unreadable=len(errors))
    with timings("read_state"):
        if written:
            project.tasks.refresh_predictions(tasks)  # their ids link the machine labels to them
    with timings("write_labels"):
        from integrations.labelstudio.project import set_model_version

        set_model_version(project.tasks.client, project.tasks.project_id, champion.version)
        previous = RoundLedger.last_completed_champion(runs)
        if previous and previous != champion.version and ledger.state == "started":
            report.say(f"the champion changed since the last round ({previous} -> {champion.version})")
            _revoke(project, choices, tasks, policy, report)
    hook("predicted", {"written": written})

    # 3: the plan, computed once per round and kept in the round's run
    saved = ledger.saved_plan()
    if saved is not None:
        auto_labels, review, plan_version = saved.auto_labels, saved.review, saved.model_version
        report.say(f"using the plan saved by round {report.round} ({len(auto_labels)} auto-labels, "
                   f"{len(review)} to review)")
    else:
        with timings("plan"):
            plan, embeddings = make_plan(project, choices, [t for t in tasks if not t.annotations], cache, errors,
                                         policy)
        auto_labels, review, plan_version = plan.auto_labels, plan.review, champion.version
        with timings("record"):
            ledger.save_plan(plan, champion.version, policy.tau, embeddings)
        counts.update({f"plan.{k}": v for k, v in plan.counts().items()})
    hook("planned", {"auto_labels": len(auto_labels), "review": len(review)})

    # 4: the plan written
    if ledger.state in ("started", "planned"):
        with timings("write_labels"):
            made, skipped = apply_auto_labels(project, tasks, auto_labels, plan_version, choices, hook)
        counts.update(auto_labelled=made, auto_skipped=skipped)
        with timings("write_queue"):
            queued = apply_review_queue(project, tasks, review)
        counts.update(routed=len(review), queue_updates=queued)
        ledger.applied()
        hook("applied", {"auto_labelled": made})

    # 5: retrain, judge, follow
    with timings("retrain"):
        _retrain(project, options, choices, tasks, ledger, report, hook)
    report.champion_after = str(mlflow_registry.resolve(options.model_name, mlflow_registry.CHAMPION))

    # 6: the round's record. The fingerprint is of the state the round started from: a person who
    # labels while it runs makes the next `alloop sync` a new round.
    with timings("record"):
        ending = state_now if report.champion_after == champion.version else \
            fingerprint(report.champion_after, project.tasks.read(progress=False), project.bot_id, policy)
        ledger.finish(counts=counts, timings=timings, messages=report.messages,
                      champion_after=report.champion_after, fingerprint=ending)
    hook("complete", {})
    return report


def _retrain(project: LoopProject, options: SyncOptions, choices: ChampionChoices, tasks: list[Task],
             ledger: RoundLedger, report: RoundReport, hook: Hook) -> None:
    """Step 5. A resumed round that had trained a version judges it (the decision to retrain was made then)."""
    class_names = choices.champion.class_names
    labels, unmapped = task_labels(tasks, choices.class_of_choices, project.bot_id)
    if unmapped:
        report.say(f"{unmapped} human label(s) use a choice the model's classes {class_names} do not "
                   "cover; they are left out of training")
    split = split_labels(labels, project.key, options.holdout_share)
    # new since the last retrain (the newest version's human labels), so a rejected challenger is not
    # retrained on the same labels round after round
    new_human = split.train_human() - retrain.trained_on_human_labels(options.model_name)
    report.counts.update(human_labels=split.human, holdout_labels=len(split.holdout), train_labels=len(split.train),
                         auto_labels_total=sum(lab.source == "auto" for lab in labels.values()),
                         new_human_labels=max(new_human, 0), retrained=0, promoted=0)
    base = (retrain.champion_records(mlflow_registry.training_rows(choices.champion.ref), class_names)
            if options.champion_data else [])
    if ledger.challenger_before_restart is None:
        why = retrain.why_not_retrain(new_human, count_by_class([*split.train.values(), *base], class_names),
                                      retrain_after=options.retrain_after, force=options.force_retrain)
        if why is not None:
            report.say(why)
            return

    manifests = retrain.write_manifests(project, tasks, labels, split, ledger, options, base)
    if manifests.unreadable:
        report.say(f"{manifests.unreadable} labelled task(s) left out of the manifests: their images could not be read")
    if manifests.champion_data.missing:
        report.say(f"{manifests.champion_data.missing} image(s) of the champion's training data are no longer on "
                   "this machine: retraining without them")
    report.counts.update(manifest_unreadable=manifests.unreadable, champion_data=len(manifests.champion_data.records),
                         champion_data_missing=manifests.champion_data.missing)
    version = retrain.train_challenger(choices.champion, manifests, ledger, options, report)
    report.counts["retrained"] = 1
    ledger.trained(str(version))
    hook("trained", {"version": str(version)})

    if not retrain.judge(version, manifests, class_names, options, report):
        return
    report.counts["promoted"] = 1
    hook("promoted", {"version": str(version)})
    follow_new_champion(project, options, version, report)


def follow_new_champion(project: LoopProject, options: SyncOptions, ref, report: RoundReport) -> None:
    """After a promotion: the new champion's predictions everywhere, the project's model_version, and
    the machine labels it contradicts sent back to review."""
    from integrations.labelstudio.project import set_model_version

    choices = champion_for(ref, project, options.label_map)
    tasks = project.tasks.read(progress=False)
    cache = EmbeddingCache(cache_path(options.state_dir, choices.champion.version, project.key))
    written, _ = score_tasks(project, choices, tasks, need_embedding={t.id for t in tasks if not t.annotations},
                             cache=cache, batch_size=options.batch_size, progress=options.progress)
    report.counts["predicted_by_new_champion"] = written
    tasks = project.tasks.read(progress=False)
    set_model_version(project.tasks.client, project.tasks.project_id, choices.champion.version)
    _revoke(project, choices, tasks, effective_policy(options, project.key), report)


def _revoke(project: LoopProject, choices: ChampionChoices, tasks: list[Task], policy: PolicyConfig,
            report: RoundReport) -> None:
    revoked = revoke_contradicted(project, choices, tasks, policy, report.round)
    report.counts["revoked"] = report.counts.get("revoked", 0) + revoked
    if revoked:
        report.say(f"{revoked} auto-label(s) that {choices.champion.version} confidently contradicts went back "
                   "to review")


@dataclass(frozen=True)
class Predicted:
    champion: object  # mlproject.serving.champion.Champion
    tasks: list
    written: int
    errors: dict  # task id -> why its image could not be used
    model_version_state: str


def predict_project(project: LoopProject, ref, *, state_dir: Path, batch_size: int = 32,
                    label_map: dict | None = None, progress: bool = True) -> Predicted:
    """Steps 1 and 2 alone (``alloop predict``): every task gets the champion's prediction, the open
    ones their embeddings, and the project's model_version follows."""
    from integrations.labelstudio.project import set_model_version

    choices = champion_for(ref, project, label_map)
    version = choices.champion.version
    tasks = project.tasks.read(progress=progress)
    cache = EmbeddingCache(cache_path(state_dir, version, project.key))
    written, errors = score_tasks(project, choices, tasks, need_embedding={t.id for t in tasks if not t.annotations},
                                  cache=cache, batch_size=batch_size, progress=progress)
    state = set_model_version(project.tasks.client, project.tasks.project_id, version)
    return Predicted(choices.champion, tasks, written, errors, state)
