"""``promote``: compare ``challenger`` with ``champion`` on a fixed human-labelled set; move ``champion`` only if it is better."""

from __future__ import annotations

import argparse

import mlflow

from integrations import mlflow_registry, mlflow_runs
from mlproject.entrypoints._evaluation import (
    add_eval_data_arguments,
    evaluate_version,
    log_eval_data,
    select_records,
    write_json_artifact,
)
from mlproject.registry.promotion import decide_promotion
from mlproject.training import common


def build_parser() -> argparse.ArgumentParser:
    """Every option of this entry point; MLproject declares each as a parameter (a test checks it)."""
    parser = argparse.ArgumentParser(prog="promote", description=__doc__)
    parser.add_argument("--model-name", default=common.DEFAULT_MODEL_NAME)
    parser.add_argument("--metric", default="balanced_accuracy",
                        help="metric that must improve (balanced_accuracy, accuracy, roc_auc, average_precision, ...)")
    parser.add_argument("--min-improvement", type=float, default=0.0,
                        help="required gain in the metric; 0 means the challenger must be strictly better")
    parser.add_argument("--recall-tolerance", type=float, default=0.0, help="allowed drop in defect recall")
    add_eval_data_arguments(parser, default_split="test")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)

    mlflow_registry.configure_tracking()
    challenger = mlflow_registry.require(args.model_name, mlflow_registry.CHALLENGER)
    champion = mlflow_registry.resolve(args.model_name, mlflow_registry.CHAMPION)
    with mlflow.start_run(run_name=f"promote-{args.model_name}-v{challenger.version}"):
        mlflow.set_tags({"task": "promote", "challenger": str(challenger), "champion_before": str(champion or "")})
        mlflow_runs.log_params({**vars(args), "challenger_version": challenger.version,
                                "champion_version": champion.version if champion else "none"})
        data, records = select_records(args)
        log_eval_data(data, records)
        class_names = common.class_names_for(records, args.positive_label)
        challenger_scores = evaluate_version(challenger, records, class_names, skip_bad=args.skip_bad_images,
                                             prefix="challenger_", artifact_path="challenger")
        champion_scores = None
        if champion is not None and champion.version != challenger.version:
            champion_scores = evaluate_version(champion, records, class_names, skip_bad=args.skip_bad_images,
                                               prefix="champion_", artifact_path="champion")
        if champion is not None and champion.version == challenger.version:
            print(f"{challenger} is already the champion: nothing to do.")
            mlflow.set_tag("decision", "already champion")
            return
        decision = decide_promotion(challenger_scores, champion_scores, metric=args.metric,
                                    min_improvement=args.min_improvement, recall_tolerance=args.recall_tolerance)
        write_json_artifact({**decision.to_dict(), "challenger": str(challenger),
                             "champion_before": str(champion) if champion else None}, "promotion", "decision.json")
        mlflow.log_metric("promoted", float(decision.promote))
        mlflow.set_tags({"decision": "promoted" if decision.promote else "rejected", "decision_reason": decision.reason})
        mlflow_registry.tag_version(challenger, {"promotion": "promoted" if decision.promote else "rejected",
                                                 "promotion_reason": decision.reason})
        if decision.promote:
            mlflow_registry.set_alias(challenger, mlflow_registry.CHAMPION)
            print(f"PROMOTED {challenger} to champion: {decision.reason}")
        else:
            print(f"NOT promoted: {challenger} stays challenger; champion is still {champion}: {decision.reason}")


if __name__ == "__main__":
    main()
