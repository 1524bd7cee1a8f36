"""Training: the code behind the MLflow entry points (svm, frozen, finetune)."""
