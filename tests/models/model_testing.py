"""Shared helpers of the model tests: tiny networks and random inputs."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from oat_tf.models import resnet
from oat_tf.models import small_cnn
from oat_tf.models import wide_resnet

FAMILIES = ("resnet", "wide_resnet", "small_cnn")
VARIANTS = ("plain", "oat", "oat_single_bn")
TINY_ENCODER = {"lambda_values": [0.0, 0.1, 0.2, 0.3, 0.4, 1.0], "dim": 8, "seed": 0}


def tiny_model(family: str, variant: str, **kwargs):
    """Returns a small network of the family (fast to build and run on CPU)."""
    if family == "resnet":
        args = dict(
            stage_blocks=(1, 1, 1, 1), stage_filters=(4, 8, 8, 8), image_shape=(8, 8, 3)
        )
        args.update(kwargs)
        return resnet.ResNet(variant=variant, encoder=TINY_ENCODER, **args)
    if family == "wide_resnet":
        args = dict(depth=10, width=1, image_shape=(8, 8, 3), dropout=0.3)
        args.update(kwargs)
        return wide_resnet.WideResNet(variant=variant, encoder=TINY_ENCODER, **args)
    if family == "small_cnn":
        args = dict(filters=(4, 8), hidden_units=8, image_shape=(16, 16, 1))
        args.update(kwargs)
        return small_cnn.SmallCNN(variant=variant, encoder=TINY_ENCODER, **args)
    raise ValueError(f"unknown family {family!r}")


def random_inputs(image_shape: Sequence[int], lambdas: Sequence[float], seed: int = 0):
    """Returns {"image", "lambda"} numpy inputs with images uniform in [0, 1]."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(len(lambdas), *image_shape)).astype("float32")
    return {"image": images, "lambda": np.asarray(lambdas, dtype="float32")}


def trainable_count(model) -> int:
    """Number of trainable scalars (PyTorch's parameter count)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))
