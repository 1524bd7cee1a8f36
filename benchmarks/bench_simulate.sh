#!/usr/bin/env bash
# Issue 4 benchmark: `alloop simulate` on real DAGM 2007 class 1 with HED-pretrained VGG16 features.
# Outputs (gitignored): benchmarks/out/simulate/ (curves.csv, summary.csv, summary.txt, learning_curves.png),
# the feature cache benchmarks/out/feature-cache/, and the MLflow run in benchmarks/out/mlflow.db.
# Usage (from the repo root): benchmarks/bench_simulate.sh [DATA] [extra alloop simulate flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/dagm}"
shift || true
export PATH="$PWD/.venv/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=2
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$PWD/benchmarks/out/mlflow.db}"
mkdir -p benchmarks/out
# Features: native 512 px, per-channel statistics of block3_pool and block4_pool (what separates class 1's
# smoothed-patch defect; ../shared/docs). Fast variant: the svm variant's calibrated linear SVM on
# log(1 + features) reduced to 32 whitened principal components (fitted once on all images, no labels).
# Loop: 10 random initial labels, then 5 human labels per round until the pool is exhausted;
# auto-labels when the model's confidence >= 0.995 and the seed's cluster rule holds (defaults 0.9/0.9).
time alloop simulate \
  --data "$DATA" --layout dagm --pattern Class1 \
  --weights hed --image-size 512 --pooling stats --feature-layers block3_pool,block4_pool \
  --log-features --pca-dims 32 \
  --strategies random,least_confidence,margin,entropy,cluster --auto-labels both --seeds 0,1,2 \
  --initial-labels 10 --budget 5 --max-human 0 \
  --tau 0.995 --cluster-confidence 0.9 --cluster-agreement 0.9 --max-auto-per-class 100 \
  --test-fraction 0.2 --split-seed 0 \
  --cache-dir benchmarks/out/feature-cache --out benchmarks/out/simulate \
  --experiment alloop-simulate "$@"
