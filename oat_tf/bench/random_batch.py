"""The random batch every training-step benchmark times, for oat_tf and PyTorch alike.

NumPy only (no TensorFlow, no PyTorch), so that both frameworks' benchmark
processes draw the same images and labels from the same seed without loading
the other framework.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

# Image shape (H, W, C) of each benchmarked architecture.
INPUT_SHAPES = {"small_cnn": (28, 28, 1), "resnet34": (32, 32, 3), "resnet18": (32, 32, 3),
                "wrn16_8": (32, 32, 3), "wrn40_2": (96, 96, 3)}


def input_shape(architecture: str) -> Tuple[int, int, int]:
    """The (H, W, C) image shape of a benchmarked architecture.

    Raises:
        ValueError: naming `architecture` when it has no benchmark shape.
    """
    shape = INPUT_SHAPES.get(architecture)
    if shape is None:
        raise ValueError(
            f"`architecture` must be one of {sorted(INPUT_SHAPES)}. Received: architecture={architecture!r}"
        )
    return shape


def random_batch(architecture: str, batch_size: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Uniform images in [0, 1] and labels in [0, 10), drawn from `seed`.

    Args:
        architecture: str, a key of `INPUT_SHAPES`.
        batch_size: int, images in the batch.
        seed: int, seed of NumPy's `RandomState`.

    Returns:
        (images [N, H, W, C] float32, labels [N] int32).
    """
    shape = input_shape(architecture)
    rng = np.random.RandomState(seed)
    images = rng.uniform(size=(batch_size, *shape)).astype("float32")
    labels = rng.randint(0, 10, size=batch_size).astype("int32")
    return images, labels
