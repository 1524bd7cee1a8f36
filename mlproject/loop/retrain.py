"""Step 5 of a round: retrain on the project's labels, judge the challenger, follow a promotion.

Human and machine labels go to a manifest with their provenance, beside the data the champion was
trained on (its imported records: a retrain on a few dozen project labels alone forgets what the
champion knew); the champion's own recipe (or the entry point asked for) trains on it, and
``promote`` judges the new version against human labels it never saw (a fixed, hashed share of them). A promoted version's predictions reach every task,
the project's model_version follows, and the machine labels it confidently contradicts go back
to review.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from integrations import mlflow_registry
from integrations.labelstudio.images import ImageFetchError
from integrations.labelstudio.tasks import Task
from mlproject.data.loaders import manifest_hash, write_manifest
from mlproject.data.records import LabeledImage
from mlproject.loop.labels import LabelSplit, TaskLabel, count_by_class, round_of
from mlproject.loop.ledger import RoundLedger
from mlproject.loop.options import SyncOptions
from mlproject.loop.project import LoopProject, local_image_path
from mlproject.loop.round_report import RoundReport, SyncError

log = logging.getLogger("alloop.loop")

# The training run splits its manifest into train/val/test again (at least one of each class in
# each part); five of a class leave two or more to train on.
MIN_TRAIN_LABELS_PER_CLASS = 5
# What a retrain never inherits from the champion's run: this round decides them.
NOT_INHERITED = ("data", "layout", "pattern", "registered_model_name", "round")

Hook = Callable[[str, dict], None]


def why_not_retrain(new_human: int, train_by_class: dict[str, int], *, retrain_after: int, force: bool) -> str | None:
    """None when a round should retrain, else the one-line reason it does not."""
    if not force and new_human < retrain_after:
        return (f"{max(new_human, 0)} new human label(s) since the last model was trained; "
                f"retraining after {retrain_after} (or pass --retrain)")
    if min(train_by_class.values()) < MIN_TRAIN_LABELS_PER_CLASS:
        return f"not retraining: the training labels {train_by_class} need at least {MIN_TRAIN_LABELS_PER_CLASS} of each class"
    return None


def why_not_judged(holdout_by_class: dict[str, int], min_per_class: int) -> str | None:
    """None when the held-out human labels can judge a challenger, else why not."""
    if min(holdout_by_class.values()) < min_per_class:
        return (f"the held-out human labels {holdout_by_class} need at least {min_per_class} of each class "
                "to judge it; label more and run sync again")
    return None


def champion_records(rows: list[dict], class_names) -> list[LabeledImage]:
    """The imported records among the rows the champion was trained on (``mlflow_registry.training_rows``)
    with a label of the model's classes. Its human and machine labels are left out: the project holds
    their current state (a label a person changed or deleted since must not come back from an old run)."""
    return [LabeledImage(row["image"], row["label"], "import", int(float(row.get("round") or 0)))
            for row in rows
            if (row.get("source") or "import") == "import" and row.get("label") in class_names and row.get("image")]


def _digest(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ChampionData:
    records: list
    replaced: int  # the same image is one of the project's labelled tasks: the project's label wins
    missing: int  # no longer on this machine


def without_project_images(base: list[LabeledImage], project_paths: list[str]) -> ChampionData:
    """``base`` less the images that are also labelled tasks of the project (the same file, or the same
    bytes under another name): so a held-out image never reaches training, and a person's label of an
    image is the only one it has. Files are hashed only where their sizes collide."""
    known = {os.path.realpath(p) for p in project_paths}
    by_size: dict[int, list[str]] = defaultdict(list)
    for path in known:
        try:
            by_size[os.path.getsize(path)].append(path)
        except OSError:
            continue
    digests_by_size: dict[int, set[str]] = {}
    kept, replaced, missing = [], 0, 0
    for record in base:
        path = os.path.realpath(record.path)
        if path in known:
            replaced += 1
            continue
        try:
            size = os.path.getsize(path)
        except OSError:
            missing += 1
            continue
        if size in by_size:
            if size not in digests_by_size:
                digests_by_size[size] = {_digest(p) for p in by_size[size]}
            if _digest(path) in digests_by_size[size]:
                replaced += 1
                continue
        kept.append(record)
    return ChampionData(kept, replaced, missing)


@dataclass(frozen=True)
class Manifests:
    train: Path
    holdout: Path
    train_records: list
    holdout_records: list
    unreadable: int
    champion_data: ChampionData = ChampionData([], 0, 0)


def write_manifests(project: LoopProject, tasks: list[Task], labels: dict[int, TaskLabel], split: LabelSplit,
                    ledger: RoundLedger, options: SyncOptions, base: list[LabeledImage] = ()) -> Manifests:
    """The round's train and hold-out manifests, images as local files (downloaded when not on disk);
    ``base`` (the champion's own training data) joins the training manifest, never the hold-out."""
    out_dir = Path(options.state_dir) / "rounds" / project.key / f"round-{ledger.number}"
    images_dir = Path(options.state_dir) / "images" / project.key
    starts = ledger.round_starts()
    by_id = {t.id: t for t in tasks}
    records, holdout_records, unreadable = [], [], 0
    for task_id, lab in sorted(labels.items()):
        try:
            path = local_image_path(project, by_id[task_id], images_dir)
        except (ImageFetchError, OSError) as exc:
            unreadable += 1
            log.error("task %s left out of the manifest: %s", task_id, exc)
            continue
        record = LabeledImage(path, lab.label, lab.source, round_of(lab.created_at, starts))
        (holdout_records if task_id in split.holdout else records).append(record)
    champion_data = without_project_images(list(base), [r.path for r in records + holdout_records])
    records += champion_data.records
    train = write_manifest(out_dir / "train.csv", records)
    holdout = write_manifest(out_dir / "holdout.csv", holdout_records)
    ledger.log_manifest(train)
    ledger.log_manifest(holdout)
    return Manifests(train, holdout, records, holdout_records, unreadable, champion_data)


def run_entry_point(options: SyncOptions, entry_point: str, params: dict) -> None:
    from integrations.mlflow_runs import EntryPointError
    from integrations.mlflow_runs import run_entry_point as run

    try:
        run(entry_point, params, experiment=options.training_experiment)
    except EntryPointError as exc:
        raise SyncError(f"{exc}. This round's auto-labels and review queue are written; fix the cause and "
                        "run `alloop sync` again to retry from here") from exc


def train_challenger(champion, manifests: Manifests, ledger: RoundLedger, options: SyncOptions,
                     report: RoundReport):
    """The version trained on this round's manifest: the one a killed round trained, one already
    registered for the same manifest, or a new training run of the champion's recipe (its entry
    point and run parameters, unless the options name others)."""
    from integrations.mlflow_runs import entry_point_parameters

    lineage = {"round": str(ledger.number), "manifest_hash": manifest_hash(manifests.train_records)}
    if ledger.challenger_before_restart is not None:
        version = mlflow_registry.VersionRef(*ledger.challenger_before_restart.rsplit("/", 1))
        report.say(f"{version} was trained by this round before it stopped: judging it now")
        return version
    if (existing := mlflow_registry.find_version(options.model_name, lineage)) is not None:
        report.say(f"{existing} was already trained on this round's manifest: reusing it")
        return existing
    entry_point = options.retrain_entry_point(champion.variant)
    allowed = set(entry_point_parameters(entry_point))
    unknown = set(options.train_params) - allowed
    if unknown:
        raise SyncError(f"--train-param {sorted(unknown)} not parameters of entry point {entry_point!r}: "
                        f"choose from {sorted(allowed)}")
    inherited = {k: v for k, v in mlflow_registry.training_params(champion.ref).items()
                 if k in allowed and k not in NOT_INHERITED}
    params = {**inherited, **options.train_params, "data": str(manifests.train), "layout": "manifest",
              "registered_model_name": options.model_name, "round": ledger.number, "skip_bad_images": "true"}
    records = manifests.train_records
    sources = {source: sum(r.source == source for r in records) for source in ("human", "auto", "import")}
    report.say(f"retraining: mlflow run . -e {entry_point} on {len(records)} labels ({sources['human']} human, "
               f"{sources['auto']} auto, {sources['import']} from the champion's training data)")
    run_entry_point(options, entry_point, params)
    version = mlflow_registry.find_version(options.model_name, lineage)
    if version is None:
        raise SyncError(f"the {entry_point} run finished but registered no version of "
                        f"{options.model_name} for round {ledger.number}; see experiment {options.training_experiment}")
    return version


def judge(version, manifests: Manifests, class_names, options: SyncOptions, report: RoundReport) -> bool:
    """Promote ``version`` if it beats the champion on the held-out human labels; True when it did."""
    tags = mlflow_registry.version_tags(version)
    if "promotion" not in tags:  # not judged yet (a resumed round may have judged it already)
        why = why_not_judged(count_by_class(manifests.holdout_records, class_names), options.min_holdout_per_class)
        if why is not None:
            report.say(f"{version} stays challenger: {why}")
            return False
        if mlflow_registry.resolve(options.model_name, mlflow_registry.CHALLENGER) != version:
            mlflow_registry.set_alias(version, mlflow_registry.CHALLENGER)
        run_entry_point(options, "promote", {
            "model_name": options.model_name, "eval_data": str(manifests.holdout), "layout": "manifest",
            "split": "all", "metric": options.metric, "min_improvement": options.min_improvement,
            "recall_tolerance": options.recall_tolerance})
        tags = mlflow_registry.version_tags(version)
    report.say(f"{version}: {tags.get('promotion', 'not judged')} ({tags.get('promotion_reason', '')})")
    return tags.get("promotion") == "promoted"


def trained_on_human_labels(model_name: str) -> int:
    """The most human labels any registered version was trained on: labels beyond it are new."""
    return max([int(float(v)) for v in mlflow_registry.versions_tag_values(model_name, "labels_by_source.human")]
               or [0])
