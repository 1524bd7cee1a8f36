"""Experiments created from several processes at once (two syncs, a sync and a training run)."""

import threading

import mlflow

from integrations.mlflow_runs import experiment_id


def test_experiment_id_survives_a_creation_race(tmp_path):
    """Real SQLite store, threads released together: each name gets one experiment, nobody fails."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment_id("warm-up")  # the schema is created once, not raced
        for round_number in range(3):
            name = f"race-{round_number}"
            barrier = threading.Barrier(4)
            found, failures = [], []

            def worker():
                barrier.wait()
                try:
                    found.append(experiment_id(name))
                except Exception as exc:  # noqa: BLE001 — the test counts them
                    failures.append(repr(exc))

            threads = [threading.Thread(target=worker) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert failures == [] and len(found) == 4 and len(set(found)) == 1
    finally:
        mlflow.set_tracking_uri(None)
