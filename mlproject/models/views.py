"""Test-time views: the 8 flips and quarter turns of an image, and scores averaged over them.
Plain numpy: the registered model scores with these without any training code."""

from __future__ import annotations

import numpy as np

#: Flips and quarter turns: the 8 views of an image under the square's symmetries (the dihedral
#: group). A texture's defect label does not change under any of them.
DIHEDRAL_VIEWS = 8


def dihedral_view(images: np.ndarray, view: int) -> np.ndarray:
    """View ``view`` (0-7) of a batch (N, H, W, C): ``view % 4`` quarter turns, mirrored if ``view >= 4``."""
    if not 0 <= view < DIHEDRAL_VIEWS:
        raise ValueError(f"view must be between 0 and {DIHEDRAL_VIEWS - 1}, got {view}")
    turned = np.rot90(images, k=view % 4, axes=(1, 2))
    return np.ascontiguousarray(turned[:, :, ::-1] if view >= 4 else turned)


#: What ``test_time_views`` may be: each image as it is, or the mean over all its dihedral views.
TEST_TIME_VIEWS = (1, DIHEDRAL_VIEWS)


def mean_over_views(predict, images: np.ndarray, views: int) -> np.ndarray:
    """``predict(batch) -> P(defect) per image``, averaged over the first ``views`` dihedral views.

    With all 8 views the score is the same for an image and any flip or quarter turn of it: a defect
    at one border is also seen where the network saw such defects in training. Costs ``views``
    forward passes per image.
    """
    if views not in TEST_TIME_VIEWS:
        raise ValueError(f"test_time_views must be one of {TEST_TIME_VIEWS}, got {views}")
    if views == 1:
        return np.asarray(predict(images), dtype=np.float64)
    return np.mean([np.asarray(predict(dihedral_view(images, v)), dtype=np.float64) for v in range(views)], axis=0)
