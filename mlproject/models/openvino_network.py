"""A saved Keras network compiled by OpenVINO for this CPU: the fast scoring engine.

On CPUs with AMX, OpenVINO's bfloat16 kernels ran VGG16 at 512 px about 9x faster than TensorFlow in
float32 (TensorFlow's own ``mixed_bfloat16`` about 3x), with pooled features within ~1-2 % of float32.
The network is converted when the model is loaded (from the same weights the registered model
carries), so nothing but the ``scoring_engine`` key travels in the model: a model loaded where
OpenVINO is missing scores with TensorFlow instead (see :func:`openvino_available`).
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np

log = logging.getLogger("alloop")

#: What OpenVINO may compute in: float32, or bfloat16 (AMX or AVX512_BF16).
OPENVINO_PRECISIONS = {"float32": "f32", "bfloat16": "bf16"}
#: Images per inference call: at 512 px, 8 ran about 15 % faster than 32 here (caches), 1 as fast as 8.
INFER_CHUNK = 8
#: The layer names of a ``frozen``/``finetune`` network whose two outputs the loop reads at once.
FEATURES_LAYER, HEAD_LAYER = "vgg16_features", "head"


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class OpenVinoNetwork:
    """Called like the Keras model it was compiled from (``network(batch, training=False)`` gives that
    model's output); :meth:`scores_and_embeddings` gives a head network's P(defect) and the pooled
    features it reads, from the same pass."""

    def __init__(self, compiled, with_embeddings: bool, precision: str):
        self._compiled = compiled
        self.with_embeddings = with_embeddings
        self.precision = precision
        self._request = compiled.create_infer_request()
        # One request, used by one caller at a time (the backend predicts from a thread pool): each
        # call already uses every core, so serialising costs no throughput.
        self._lock = threading.Lock()
        # As a one-output Keras model shows itself (``__call__`` gives the first output only).
        dims = compiled.outputs[0].get_partial_shape()
        self.output = SimpleNamespace(shape=tuple(d.get_length() if d.is_static else None for d in dims))
        self.outputs = [self.output]

    def _run(self, batch) -> list[np.ndarray]:
        batch = np.asarray(batch, dtype=np.float32)
        parts = []
        with self._lock:
            for start in range(0, len(batch), INFER_CHUNK):
                result = self._request.infer({0: np.ascontiguousarray(batch[start : start + INFER_CHUNK])})
                parts.append([np.array(result[output], dtype=np.float32) for output in self._compiled.outputs])
        if not parts:
            return [np.zeros((0, *(d.get_length() for d in list(output.get_partial_shape())[1:])), np.float32)
                    for output in self._compiled.outputs]
        return [np.concatenate(arrays) for arrays in zip(*parts)]

    def __call__(self, batch, training: bool = False) -> np.ndarray:
        return self._run(batch)[0]

    def scores_and_embeddings(self, batch) -> tuple[np.ndarray, np.ndarray]:
        if not self.with_embeddings:
            raise ValueError("this network was compiled without its features output")
        p_defect, features = self._run(batch)
        return p_defect[:, 0], features


def _export_model(keras_model):
    """The model to convert: a head network with its pooled features as a second output (the loop's
    embeddings), any other network as it is."""
    import keras

    names = {layer.name for layer in keras_model.layers}
    if {FEATURES_LAYER, HEAD_LAYER} <= names:
        features = keras_model.get_layer(FEATURES_LAYER).output
        return keras.Model(keras_model.inputs, [keras_model.outputs[0], features]), True
    return keras_model, False


def _check_precision(precision: str) -> None:
    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(OPENVINO_PRECISIONS)}, got {precision!r}")


def convert_network(keras_model):
    """``(OpenVINO graph, with_embeddings)``: ``keras_model`` converted through a SavedModel export, not
    yet compiled (what a quantiser such as NNCF takes)."""
    import openvino as ov

    exported, with_embeddings = _export_model(keras_model)
    with tempfile.TemporaryDirectory(prefix="alloop-openvino-") as tmp:
        saved = Path(tmp) / "saved_model"
        exported.export(str(saved), verbose=False)
        return ov.convert_model(str(saved)), with_embeddings


def compile_converted(converted, with_embeddings: bool, precision: str = "bfloat16") -> OpenVinoNetwork:
    """A graph from :func:`convert_network` (or one derived from it) compiled for this machine's CPU."""
    import openvino as ov

    _check_precision(precision)
    # LATENCY: one request uses every core; the caller batches (throughput mode would want parallel requests).
    compiled = ov.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
                                                          "PERFORMANCE_HINT": "LATENCY"})
    log.info("OpenVINO %s network compiled for this CPU", precision)
    return OpenVinoNetwork(compiled, with_embeddings, precision)


def compile_network(keras_model, precision: str = "bfloat16") -> OpenVinoNetwork:
    """``keras_model`` converted and compiled for this machine's CPU in ``precision``. Takes a few
    seconds for VGG16; raises ImportError where OpenVINO is not installed."""
    _check_precision(precision)  # before the conversion, which takes seconds
    return compile_converted(*convert_network(keras_model), precision)
