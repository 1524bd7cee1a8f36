"""``alloop audit``: people check a random sample of machine labels; the loop reacts to what they find.

* A random sample of auto-labelled tasks (no person has labelled them) goes into the "Audit" view
  (task data ``alloop_audit = "yes"``); an auditor adds their own annotation to each.
* Every audited task with both labels counts: auto-label precision with a Wilson interval.
* When even the interval's upper end is below the target, tau is raised (kept per project on the
  rounds experiment; ``alloop sync`` uses it) and the auto-labels of the rounds that made the wrong
  ones go back to review. Human annotations are only read.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

from integrations import mlflow_rounds
from mlproject.loop import round_lock
from mlproject.loop.policy import AuditVerdict, judge_audit
from mlproject.loop.labels import AUDIT_KEY
from mlproject.loop.options import SyncOptions, effective_policy
from mlproject.loop.project import LoopProject
from mlproject.loop.revoke import revoke_machine_labels


@dataclass
class AuditReport:
    verdict: AuditVerdict
    sampled: int
    pending: int  # in the Audit view, not yet answered by a person
    revoked: int = 0
    rounds_revoked: list[int] = field(default_factory=list)
    wrong: list[tuple[int, str, str]] = field(default_factory=list)  # (task, machine choice, human choice)


def _auto_label_rounds(key: str) -> dict[int, int]:
    """Task id -> the round whose plan auto-labelled it (from the rounds' ledgers in MLflow)."""
    rounds = {}
    for run in mlflow_rounds.round_runs(key):
        plan = mlflow_rounds.load_json(run.info.run_id, "plan.json") or {}
        for item in plan.get("auto_labels", []):
            rounds[int(item["task_id"])] = mlflow_rounds.round_number(run)
    return rounds


def run_audit(project: LoopProject, options: SyncOptions, *, sample_size: int = 20, target: float = 0.995,
              seed: int = 0) -> AuditReport:
    """Under the project's round lock: an audit deletes machine labels a running round may be writing."""
    with round_lock.hold(project.key, wait_s=options.wait_s, lease_s=options.lease_s, command="audit"):
        return _audit(project, options, sample_size=sample_size, target=target, seed=seed)


def _audit(project: LoopProject, options: SyncOptions, *, sample_size: int, target: float, seed: int) -> AuditReport:
    tasks = project.tasks.read(progress=options.progress)
    bot = project.bot_id
    policy = effective_policy(options, project.key)

    audited, wrong, pending = 0, [], 0
    for task in tasks:
        if task.data.get(AUDIT_KEY) != "yes":
            continue
        machine = task.machine_annotations(bot, labelled=True)
        human = task.human_annotations(bot, labelled=True)
        if machine and not human:
            pending += 1
        if not machine or not human:
            continue
        audited += 1
        machine_choice = machine[-1].choices[0]
        human_choice = max(human, key=lambda a: (a.created_at, a.id)).choices[0]
        if machine_choice != human_choice:
            wrong.append((task.id, machine_choice, human_choice))
    verdict = judge_audit(audited - len(wrong), audited, target=target, tau=policy.tau)
    report = AuditReport(verdict, sampled=0, pending=pending, wrong=wrong)

    if verdict.below_target:
        mlflow_rounds.set_setting(project.key, "tau", verdict.new_tau)
        made_in = _auto_label_rounds(project.key)
        bad_rounds = sorted({made_in[t] for t, _, _ in wrong if t in made_in})
        report.rounds_revoked = bad_rounds
        for task in tasks:
            if made_in.get(task.id) not in bad_rounds:
                continue
            reason = (f"audit: round {made_in[task.id]}'s auto-labels were {verdict.precision:.1%} precise "
                      f"(target {target:.1%})")
            report.revoked += revoke_machine_labels(project, task, reason)
        tasks = project.tasks.read(progress=False)

    # a fresh random sample of machine labels nobody has checked yet
    candidates = [t for t in tasks if t.data.get(AUDIT_KEY) != "yes"
                  and t.machine_annotations(bot) and not t.touched_by_people(bot)]
    rng = random.Random(f"{project.key}:{seed}:{audited + pending}")
    chosen = sorted(rng.sample(candidates, min(sample_size, len(candidates))), key=lambda t: t.id)
    for task in chosen:
        project.tasks.set_data_fields(task, {AUDIT_KEY: "yes"})
    report.sampled = len(chosen)
    report.pending = pending + len(chosen)
    mlflow_rounds.log_audit(project.key, {
        "audited": verdict.audited, "audit_correct": verdict.correct,
        **({"auto_label_precision": verdict.precision, "precision_low": verdict.low, "precision_high": verdict.high}
           if verdict.audited else {}),
        "below_target": float(verdict.below_target), "revoked": report.revoked, "sampled": report.sampled},
        {"verdict": asdict(verdict), "wrong": wrong, "rounds_revoked": report.rounds_revoked,
         "sampled_tasks": [t.id for t in chosen]})
    return report
