"""Label Studio integration: run a local server (`server`) and talk to it through the SDK.

The server itself lives in its own virtual environment (default `<repo>/.venv-labelstudio`), so its
strict pins (Django, pytz, pyarrow, ...) stay out of the project's environment. Only the SDK
(`label-studio-sdk`) is installed in the project venv.
"""
