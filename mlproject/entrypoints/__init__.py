"""One module per MLflow entry point (see MLproject): small, explicit parameters."""
