"""Thin adapters to the outside systems: MLflow (tracking, registry) and Label Studio."""
