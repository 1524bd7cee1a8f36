"""The registered model: raw image bytes in, P(defect), label and model version out.

Decoding, resizing and VGG preprocessing run inside the model (the same
:func:`mlproject.data.decode.images_to_model_input` training uses), so serving cannot drift
from training. The package travels with the model (``code_paths``).

Input: a DataFrame with a column ``image`` of raw encoded image bytes (PNG, JPEG, BMP, TIFF) and,
optionally, a string column ``source`` naming each image (a task id, a file), which the row's error
then names instead of ``row i``. Over MLflow's REST scoring server send the bytes base64-encoded
(``dataframe_split`` JSON); MLflow decodes binary columns itself. In Python, base64 strings are
accepted as well.

Output: a DataFrame, one row per input row, with ``p_defect`` (float; NaN when the image could not
be decoded), ``label`` (the class at the model's threshold; empty on error), ``model_version``
and ``error`` (empty, or why that image could not be read).

Fast scoring: a model whose config has ``view_gate_margins`` scores its test-time views one at a
time and stops an image as soon as the remaining views cannot change its decision (its score is
then the mean of the views it got), or, after 1, 2 or 4 views, as soon as the running mean is as far
from the threshold as validation said was safe at registration. One with
``scoring_precision: bfloat16`` runs its conv blocks in bfloat16 where the CPU computes it natively,
in TensorFlow or, with ``scoring_engine: openvino``, compiled by OpenVINO at load time (about 3x
faster again on CPUs with AMX; where OpenVINO is not installed the model scores in TensorFlow float32,
with a warning). ``exact`` (a predict param, or ``model_config={"exact": True}`` at load) scores every view in
float32 instead. Models registered without those keys score exactly; those registered with the
single one-view ``view_gate_margin`` use it as their margin after one view.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from mlproject.data.decode import TRAINING_FIT

log = logging.getLogger("alloop")

CONFIG_ARTIFACT = "model_config"
KERAS_ARTIFACT = "keras_model"
SKLEARN_ARTIFACT = "sklearn_model"

SIGNATURE = ModelSignature(
    # ``source`` is optional: callers that only send images keep working. Models registered before
    # it existed drop the column (MLflow warns and ignores columns outside the signature).
    inputs=Schema([ColSpec("binary", "image"), ColSpec("string", "source", required=False)]),
    outputs=Schema(
        [
            ColSpec("double", "p_defect"),
            ColSpec("string", "label"),
            ColSpec("string", "model_version"),
            ColSpec("string", "error"),
        ]
    ),
    # exact=true: every test-time view, in float32 (what fast scoring is measured against).
    params=ParamSchema([ParamSpec("exact", "boolean", False)]),
)

#: Written into the MLmodel file next to the signature, for whoever calls the model.
SIGNATURE_DOC = {
    "input": "DataFrame column 'image': raw encoded image bytes (PNG, JPEG, BMP, TIFF; 8/16-bit gray, RGB, "
             "RGBA, palette). Over the REST scoring server: base64 strings in dataframe_split JSON. Optional "
             "string column 'source': a name per image (task id, file) that errors give instead of 'row i'.",
    "output": "p_defect (float, NaN if undecodable), label (class at the model's threshold), "
              "model_version (NAME/VERSION when loaded through the registry), error (empty or the reason)",
}


def _row_sources(frame: pd.DataFrame) -> list[str]:
    """Each row's name for errors: its ``source`` if the caller gave one, else ``row i``."""
    given = frame["source"].tolist() if "source" in frame.columns else [None] * len(frame)
    return [value if isinstance(value, str) and value.strip() else f"row {i}" for i, value in enumerate(given)]


def native_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512_BF16 or AMX); elsewhere it is emulated, slower than float32."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bfloat16_twin(keras_model):
    """The same network with its conv and pooling layers computing in bfloat16 (weights, pooled
    statistics and head stay float32), sharing nothing with ``keras_model``. On CPUs with AMX or
    AVX512_BF16 a VGG16 forward pass takes about a third to half the time."""
    import keras

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.MaxPooling2D)):
            config["dtype"] = "mixed_bfloat16"
        return layer.__class__.from_config(config)

    twin = keras.models.clone_model(keras_model, clone_function=clone, recursive=True)
    twin.set_weights(keras_model.get_weights())
    return twin


#: Who runs the fast network: TensorFlow, or OpenVINO (compiled at load time from the same weights).
SCORING_ENGINES = ("tensorflow", "openvino")
SCORING_PRECISIONS = ("float32", "bfloat16")


def fast_network(keras_model, config: dict):
    """The network a model with this config scores with when not asked for exact scores: ``keras_model``
    itself, its TensorFlow bfloat16 twin, or an OpenVINO compilation of it (see the module)."""
    from mlproject.models.openvino_network import compile_network, openvino_available

    precision = config.get("scoring_precision", "float32")
    if config.get("scoring_engine", "tensorflow") == "openvino":
        if openvino_available():
            return compile_network(keras_model, precision)
        log.warning("this model scores with OpenVINO, which is not installed here: scoring in TensorFlow float32 "
                    "(slower, same decisions); `pip install openvino` to get the fast path")
        return keras_model
    if precision == "bfloat16" and native_bfloat16():
        return bfloat16_twin(keras_model)
    return keras_model


def _as_bytes(value) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return base64.b64decode(value, validate=True)
    raise TypeError(f"image must be bytes or a base64 string, got {type(value).__name__}")


class DefectClassifierModel(mlflow.pyfunc.PythonModel):
    """One class for all variants: a Keras network, optionally followed by a scikit-learn classifier."""

    def load_context(self, context):
        import keras

        import mlproject.models.layers  # noqa: F401  (registers custom layers before loading)

        self.config = json.loads(Path(context.artifacts[CONFIG_ARTIFACT]).read_text())
        self.keras_model = keras.models.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        self.sklearn_model = None
        if SKLEARN_ARTIFACT in context.artifacts:
            import joblib

            self.sklearn_model = joblib.load(context.artifacts[SKLEARN_ARTIFACT])
        model_config = context.model_config or {}
        self.model_version = str(model_config.get("model_version") or self.config.get("model_version", ""))
        self.exact = bool(model_config.get("exact", False))
        self.fast_keras_model = fast_network(self.keras_model, self.config)

    @property
    def fit(self) -> str:
        return str(self.config.get("fit", "squash"))  # models registered before "pad": they were trained squashed

    @property
    def test_time_views(self) -> int:
        return int(self.config.get("test_time_views", 1))  # models registered before it existed: 1

    @property
    def view_gate_margins(self) -> dict[int, float] | None:
        """Views seen -> how far from the threshold the running mean must be to stop; None: all views always."""
        from mlproject.models.views import margins_from_config

        return margins_from_config(self.config)

    def _network(self, exact: bool):
        return self.keras_model if exact else getattr(self, "fast_keras_model", self.keras_model)

    def predict_probabilities(self, batch: np.ndarray, *, exact: bool | None = None,
                              first: np.ndarray | None = None) -> np.ndarray:
        """P(defect) for a batch of preprocessed images: the mean over the model's test-time views,
        fast (see the module) unless ``exact`` (default: the model's ``exact`` setting). ``first``:
        the view-0 scores, when the caller has them from the same network."""
        from mlproject.models.views import mean_over_views, staged_mean_over_views

        exact = getattr(self, "exact", False) if exact is None else bool(exact)
        network = self._network(exact)

        def one_view(images):
            return self._predict_one_view(images, network)

        margins = self.view_gate_margins
        if exact or margins is None or self.test_time_views == 1:
            return mean_over_views(one_view, batch, self.test_time_views, first=first)
        return staged_mean_over_views(one_view, batch, self.test_time_views, threshold=float(self.config["threshold"]),
                                      margins=margins, first=first)[0]

    def _predict_one_view(self, batch: np.ndarray, network=None) -> np.ndarray:
        network = self.keras_model if network is None else network
        batch_size = int(self.config.get("batch_size", 32))
        outputs = []
        for start in range(0, len(batch), batch_size):
            outputs.append(np.asarray(network(batch[start : start + batch_size], training=False), dtype=np.float32))
        network_out = np.concatenate(outputs) if outputs else np.zeros((0, 1), np.float32)
        if self.sklearn_model is not None:
            return self.sklearn_model.predict_proba(network_out)[:, 1] if len(network_out) else np.zeros(0)
        return network_out[:, 0]

    def score_and_embed(self, images: list[bytes], sources: list[str] | None = None, *, exact: bool | None = None):
        """P(defect) and a backbone embedding per image, from one forward pass (the labelling loop's input).

        The embedding is what the classifier sees: the pooled VGG16 features (before the SVM's or the
        head's standardisation; models registered before the multi-block head: the global average of
        the last block's output), of each image
        as it is. With test-time views, P(defect) is their mean, as :meth:`predict` gives it (the
        other passes, for every image or, fast, only until its decision is settled; ``exact`` as there).
        Returns ``(p_defect, embeddings, good_indices, errors)``; undecodable images are left out of
        the first three and listed in ``errors`` (one :class:`BadImageError` each).
        """
        from mlproject.data.decode import images_to_model_input
        from mlproject.models.variants import head_scores_and_embeddings

        batch, good, errors = images_to_model_input(images, int(self.config["image_size"]), sources=sources, fit=self.fit)
        exact = getattr(self, "exact", False) if exact is None else bool(exact)
        network = self._network(exact)
        batch_size = int(self.config.get("batch_size", 32))
        p_parts, e_parts = [], []
        for start in range(0, len(batch), batch_size):
            chunk = batch[start : start + batch_size]
            if self.sklearn_model is not None:
                features = np.asarray(network(chunk, training=False), dtype=np.float32)
                p_parts.append(self.sklearn_model.predict_proba(features)[:, 1])
                e_parts.append(features)
            elif getattr(network, "with_embeddings", False):  # an OpenVINO network: both outputs in one pass
                p_defect, embedding = network.scores_and_embeddings(chunk)
                p_parts.append(p_defect)
                e_parts.append(embedding)
            else:
                p_defect, embedding = head_scores_and_embeddings(network, chunk)
                p_parts.append(p_defect)
                e_parts.append(embedding)
        if not p_parts:
            return np.zeros(0), np.zeros((0, 0), np.float32), good, errors
        p_defect = np.concatenate(p_parts).astype(np.float64)
        if self.test_time_views > 1:  # view 0 is the pass just made
            p_defect = self.predict_probabilities(batch, exact=exact, first=p_defect)
        return p_defect, np.concatenate(e_parts).astype(np.float32), good, errors

    def predict(self, context, model_input, params=None):
        from mlproject.data.decode import BadImageError, images_to_model_input

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "image" not in frame.columns:
            raise ValueError("input needs a column 'image' with the encoded image bytes")
        sources = _row_sources(frame)
        raw, errors = [], {}
        for i, value in enumerate(frame["image"].tolist()):
            try:
                raw.append(_as_bytes(value))
            except (TypeError, ValueError) as exc:
                raw.append(b"")
                errors[i] = str(BadImageError(sources[i], f"not image bytes or base64 ({exc})"))
        batch, good, bad = images_to_model_input(raw, int(self.config["image_size"]), sources=sources, fit=self.fit)
        bad_indices = sorted(set(range(len(raw))) - set(good))
        for index, error in zip(bad_indices, bad):
            errors.setdefault(index, str(error))
        p_defect = np.full(len(raw), np.nan)
        # MLflow fills in the param's default (false): only true overrides the model's own setting.
        exact = True if (params or {}).get("exact") in (True, "true", "True") else None
        if len(good):
            p_defect[np.asarray(good)] = self.predict_probabilities(batch, exact=exact)
        negative, positive = self.config["class_names"]
        threshold = float(self.config["threshold"])
        labels = np.where(p_defect >= threshold, positive, negative).astype(object)
        labels[np.isnan(p_defect)] = ""
        return pd.DataFrame(
            {
                "p_defect": p_defect,
                "label": labels,
                "model_version": self.model_version,
                "error": [errors.get(i, "") for i in range(len(raw))],
            }
        )


def model_config_dict(*, variant: str, image_size: int, class_names, threshold: float, weights: str,
                      model_version: str, batch_size: int = 32, test_time_views: int = 1,
                      fit: str = TRAINING_FIT, view_gate_margins: dict | None = None,
                      scoring_precision: str = "float32", scoring_engine: str = "tensorflow") -> dict:
    """``view_gate_margins`` (views seen -> margin; None: every view for every image),
    ``scoring_precision`` and ``scoring_engine``: fast scoring, see the module; all chosen on validation."""
    if scoring_precision not in SCORING_PRECISIONS:
        raise ValueError(f"scoring_precision must be one of {SCORING_PRECISIONS}, got {scoring_precision!r}")
    if scoring_engine not in SCORING_ENGINES:
        raise ValueError(f"scoring_engine must be one of {SCORING_ENGINES}, got {scoring_engine!r}")
    fast = {} if view_gate_margins is None else {
        "view_gate_margins": {str(int(seen)): float(margin) for seen, margin in view_gate_margins.items()}}
    if scoring_precision != "float32":
        fast["scoring_precision"] = scoring_precision
    if scoring_engine != "tensorflow":
        fast["scoring_engine"] = scoring_engine
    return {
        "fit": fit,
        "variant": variant,
        "image_size": int(image_size),
        "class_names": list(class_names),
        "threshold": float(threshold),
        "weights": weights,
        "model_version": model_version,
        "batch_size": int(batch_size),
        "test_time_views": int(test_time_views),
        **fast,
    }


def pip_requirements() -> list[str]:
    """Exact versions of what the model needs at load time (mlflow infers too much, and slowly)."""
    from importlib.metadata import version

    packages = ["mlflow", "numpy", "pandas", "pillow", "scikit-learn", "keras", "h5py", "openvino"]
    requirements = [f"{name}=={version(name)}" for name in packages]
    return requirements + [f"tensorflow-cpu=={version('tensorflow-cpu')}"]


def package_dir() -> str:
    return str(Path(__file__).resolve().parents[1])
