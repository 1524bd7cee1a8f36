"""The ``alloop`` command line (Typer). Each module adds its commands to :data:`app`.

* ``project``: ``init`` (the Label Studio project) and ``serve`` (the ML backend)
* ``loop``: ``sync``, ``status``, ``audit``, ``predict`` (the labelling rounds)
* ``demo``: the whole story on synthetic data (the README's main job)
* ``simulate``: ``simulate`` (the loop replayed offline with an oracle)
* ``labelstudio``: ``alloop labelstudio ...``, a local Label Studio server
* ``score``: ``score`` (an archive of images scored on Spark by the champion)
* ``postgres``: ``alloop postgres ...``, a local PostgreSQL for Label Studio and MLflow (ALLOOP_DB=postgres)
"""

from mlproject.cli._app import app
from mlproject.cli import project  # noqa: F401,E402  (registers commands)
from mlproject.cli import loop  # noqa: F401,E402
from mlproject.cli import ingest  # noqa: F401,E402  (ingest, watch)
from mlproject.cli import demo  # noqa: F401,E402
from mlproject.cli import simulate  # noqa: F401,E402  (registers commands)
from mlproject.cli import labelstudio  # noqa: F401,E402
from mlproject.cli import score  # noqa: F401,E402
from mlproject.cli import postgres  # noqa: F401,E402

__all__ = ["app"]
