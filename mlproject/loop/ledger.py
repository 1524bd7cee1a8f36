"""A round's record in MLflow (its run in ``alloop-rounds``): how far it got, its plan, its outcome.

The one place a round reads or writes its run, so a round reads as its steps and resuming a
killed round is a matter of asking the ledger where it stopped.
"""

from __future__ import annotations

import csv
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from integrations import mlflow_rounds
from mlproject.loop.policy import AutoLabel, ReviewItem, RoundPlan


def _iso(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class SavedPlan:
    auto_labels: list[AutoLabel]
    review: list[ReviewItem]
    model_version: str


def plan_to_json(plan: RoundPlan, version: str, tau: float) -> dict:
    return {"model_version": version, "tau": tau,
            "auto_labels": [asdict(a) for a in plan.auto_labels], "review": [asdict(r) for r in plan.review],
            "cluster_of": {str(k): v for k, v in plan.cluster_of.items()},
            "clusters": {str(k): asdict(v) for k, v in plan.clusters.items()},
            "skipped_by_cap": plan.skipped_by_cap}


def plan_from_json(data: dict) -> SavedPlan:
    return SavedPlan([AutoLabel(**a) for a in data["auto_labels"]], [ReviewItem(**r) for r in data["review"]],
                     data["model_version"])


class RoundLedger:
    """One round's run. ``state`` is how far the round had got when it was opened."""

    def __init__(self, project_key: str, run, resumed: bool):
        self.project_key = project_key
        self.run_id = run.info.run_id
        self.number = mlflow_rounds.round_number(run)
        self.state = mlflow_rounds.state_of(run)
        self.resumed = resumed
        self._tags = dict(run.data.tags)

    @classmethod
    def open(cls, project_key: str) -> "RoundLedger":
        """The project's unfinished round (resumed), else a new one."""
        run, resumed = mlflow_rounds.open_or_new_round(project_key)
        return cls(project_key, run, resumed)

    # --- what earlier rounds left -----------------------------------------------------------------

    @staticmethod
    def last_completed_champion(runs) -> str | None:
        return next((r.data.tags.get("alloop.champion_after") for r in reversed(runs)
                     if mlflow_rounds.state_of(r) == "complete"), None)

    def round_starts(self) -> list[tuple[int, str]]:
        """(round, start time) of every round of the project, to tell which round a label belongs to."""
        return [(mlflow_rounds.round_number(r), _iso(r.info.start_time))
                for r in mlflow_rounds.round_runs(self.project_key)]

    @property
    def challenger_before_restart(self) -> str | None:
        """The version this round trained before it was killed (resumed rounds only)."""
        return self._tags.get("alloop.challenger") if self.resumed else None

    # --- steps -------------------------------------------------------------------------------------

    def record_start(self, params: dict, champion: str, fingerprint: str) -> None:
        mlflow_rounds.log_params(self.run_id, params)  # a resumed round keeps the params it started with
        mlflow_rounds.set_tags(self.run_id, {"alloop.champion_before": champion, "alloop.fingerprint_start": fingerprint})

    def saved_plan(self) -> SavedPlan | None:
        stored = mlflow_rounds.load_json(self.run_id, "plan.json") if self.resumed else None
        return plan_from_json(stored) if stored is not None else None

    def save_plan(self, plan: RoundPlan, version: str, tau: float, embeddings) -> None:
        """The plan before anything of it is applied: a killed round applies the same plan."""
        mlflow_rounds.log_json(self.run_id, plan_to_json(plan, version, tau), "plan.json")
        mlflow_rounds.set_state(self.run_id, "planned")
        self._log_plan_files(plan, embeddings)

    def applied(self) -> None:
        mlflow_rounds.set_state(self.run_id, "applied")

    def log_manifest(self, path: Path) -> None:
        mlflow_rounds.log_file(self.run_id, path, "manifests")

    def trained(self, version: str) -> None:
        mlflow_rounds.set_tags(self.run_id, {"alloop.challenger": version})
        mlflow_rounds.set_state(self.run_id, "trained")

    def finish(self, *, counts: dict, timings: dict, messages: list, champion_after: str, fingerprint: str) -> None:
        mlflow_rounds.log_metrics(self.run_id, {**{k: v for k, v in counts.items() if isinstance(v, (int, float))},
                                                **{f"seconds.{k}": v for k, v in timings.items()}})
        mlflow_rounds.set_tags(self.run_id, {"alloop.champion_after": champion_after, "alloop.fingerprint": fingerprint})
        mlflow_rounds.log_json(self.run_id, {"counts": counts, "messages": messages, "seconds": dict(timings)},
                               "round.json")
        mlflow_rounds.finish(self.run_id)

    def _log_plan_files(self, plan: RoundPlan, embeddings) -> None:
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
            mlflow_rounds.log_file(self.run_id, auto_path)
            mlflow_rounds.log_file(self.run_id, review_path)
            if len(embeddings) >= 2:
                png = plot_round_clusters(embeddings, sorted(plan.cluster_of), plan, Path(tmp) / "clusters.png",
                                          title=f"round {self.number}")
                mlflow_rounds.log_file(self.run_id, png)
