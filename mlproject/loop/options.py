"""How a round runs (``alloop sync``'s options), declared once for the CLI, the demo and the tests."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from integrations import mlflow_rounds
from mlproject.loop import round_lock
from mlproject.loop.policy import PolicyConfig


@dataclass(frozen=True)
class SyncOptions:
    model_name: str
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    retrain_after: int = 50  # new human labels since the newest registered version was trained
    force_retrain: bool = False
    force_round: bool = False  # a new round even when nothing changed since the last one
    holdout_share: float = 0.2  # of human-labelled tasks, kept out of training to judge promotion
    min_holdout_per_class: int = 2
    entry_point: str = ""  # "": the entry point of the champion's own variant (its recipe, retrained)
    champion_data: bool = True  # retrain on the champion's training data too, not on the project's labels alone
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

    def retrain_entry_point(self, champion_variant: str | None) -> str:
        return self.entry_point or champion_variant or "finetune"

    def __post_init__(self):
        if not 0.0 <= self.holdout_share < 1.0:
            raise ValueError(f"holdout_share must be in [0, 1), got {self.holdout_share}")
        if self.retrain_after < 1:
            raise ValueError(f"retrain_after must be >= 1, got {self.retrain_after}")
        if self.wait_s < 0 or self.lease_s <= 0:
            raise ValueError(f"--wait must be >= 0 and the lock's lease > 0, got {self.wait_s} and {self.lease_s}")


def effective_policy(options: SyncOptions, key: str) -> PolicyConfig:
    """The policy with tau raised to what an audit asked for, if higher than the option."""
    raised = mlflow_rounds.get_setting(key, "tau")
    policy = options.policy
    if raised is not None and float(raised) > policy.tau:
        policy = replace(policy, tau=float(raised))
    return policy
