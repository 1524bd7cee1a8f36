"""``evaluate``: score any registered version or alias on a dataset/split and log the same report as training."""

from __future__ import annotations

import argparse

import mlflow

from integrations import mlflow_registry, mlflow_runs
from mlproject.entrypoints._evaluation import add_eval_data_arguments, evaluate_version, log_eval_data, select_records
from mlproject.training import common


def build_parser() -> argparse.ArgumentParser:
    """Every option of this entry point; MLproject declares each as a parameter (a test checks it)."""
    parser = argparse.ArgumentParser(prog="evaluate", description=__doc__)
    parser.add_argument("--model-name", default=common.DEFAULT_MODEL_NAME)
    parser.add_argument("--model-ref", default=mlflow_registry.CHAMPION, help="alias (champion, challenger) or version number")
    add_eval_data_arguments(parser, default_split="test")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)

    mlflow_registry.configure_tracking()
    ref = mlflow_registry.require(args.model_name, args.model_ref)
    with mlflow.start_run(run_name=f"evaluate-{ref.name}-v{ref.version}"):
        mlflow.set_tags({"task": "evaluate", "model_version": str(ref)})
        mlflow_runs.log_params({**vars(args), "resolved_version": ref.version})
        data, records = select_records(args)
        log_eval_data(data, records)
        class_names = common.class_names_for(records, args.positive_label)
        metrics = evaluate_version(ref, records, class_names, skip_bad=args.skip_bad_images,
                                   prefix=f"{args.split}_", artifact_path="evaluation")
        print(f"balanced accuracy {metrics['balanced_accuracy']:.4f}, defect recall {metrics['defect_recall']:.4f}")


if __name__ == "__main__":
    main()
